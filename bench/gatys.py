"""Seconds per Gatys evaluation and peak memory, per backbone and output size.

    python bench/gatys.py                       # auto device, 10 evaluations, 256 and 512 px
    python bench/gatys.py --device cuda --iterations 30 --sizes 256 512 1024
    python bench/gatys.py --reference [--sizes 512] [--rounds 2] [--quality-size 256]

`--reference` times Atelier's engine (fp32, and bf16 where the CPU has fast bf16) against a plain
eager fp32 L-BFGS loop written from the paper (bench/gatys_reference.py) on the in-box VGG-16,
interleaved round by round, per evaluation in wall and process CPU seconds; then it runs fp32 and
bf16 to the end at --quality-size and compares their final objectives, both scored in fp32, and
saves the two images side by side under bench/results/ to look at.

VGG-19 is measured only when its weights are installed in --models-dir. The first evaluation of
each run (allocations, cuDNN autotuning) is excluded from the per-evaluation time.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from app.gatys import (
    BackboneUnavailable,
    GatysOptions,
    Progress,
    load_backbone,
    run,
)

BACKBONES = ("efficientnet-lite0", "vgg19")


@dataclass(frozen=True)
class Measurement:
    backbone: str
    size: int
    output: tuple[int, int]
    seconds_per_iteration: float
    total_seconds: float
    peak_mib: float
    growth_mib: float
    memory_kind: str


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """A textured colour image; content does not change the cost, only the size does."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / 17),
            128 + 100 * np.cos(yy / 23),
            128 + 90 * np.sin((xx + yy) / 31),
        ],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _status_kib(field: str) -> int | None:
    """A `VmHWM`/`VmRSS` line of /proc/self/status in KiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _return_free_heap_to_os() -> None:
    """glibc keeps freed blocks (e.g. a loaded checkpoint) resident; trim so RSS means usage."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak, or the process's peak resident size.

    tracemalloc cannot see torch's allocations, so on the CPU this reads the kernel's VmHWM,
    reset through /proc/self/clear_refs; where that is not allowed it falls back to ru_maxrss,
    which cannot be reset and so only reflects a run that beats every earlier peak.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "CUDA allocated" if device.type == "cuda" else "RSS"
        self.start_kib = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_kib = torch.cuda.memory_allocated(self.device) // 1024
            return
        _return_free_heap_to_os()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "RSS"
            self.start_kib = _status_kib("VmRSS") or 0
        except OSError:
            self.kind = "maxrss"
            self.start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak(self) -> tuple[float, float]:
        """(peak, peak minus the level at `start`), in MiB."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak_kib = torch.cuda.max_memory_allocated(self.device) // 1024
        elif self.kind == "RSS":
            peak_kib = _status_kib("VmHWM") or 0
        else:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak_kib / 1024, max(0, peak_kib - self.start_kib) / 1024


def measure(
    backbone_name: str,
    models_dir: Path,
    device: torch.device,
    sizes: list[int],
    iterations: int,
) -> list[Measurement]:
    backbone = load_backbone(backbone_name, models_dir, device)
    content = synthetic_image(768, 1024, seed=0)
    style = synthetic_image(640, 1024, seed=1)
    # Lazy imports and first-call allocations would otherwise land in the first row's numbers.
    run(content, [style], GatysOptions(iterations=2, size=32), backbone, device=device)
    results: list[Measurement] = []
    for size in sizes:
        progress: list[Progress] = []
        memory = PeakMemory(device)
        memory.start()
        started = time.perf_counter()
        output = run(
            content,
            [style],
            GatysOptions(iterations=iterations + 1, size=size),
            backbone,
            device=device,
            on_progress=progress.append,
        )
        total = time.perf_counter() - started
        peak, growth = memory.peak()
        per_iteration = (progress[-1].elapsed_s - progress[0].elapsed_s) / iterations
        results.append(
            Measurement(
                backbone=backbone.name,
                size=size,
                output=(output.shape[1], output.shape[0]),
                seconds_per_iteration=per_iteration,
                total_seconds=total,
                peak_mib=peak,
                growth_mib=growth,
                memory_kind=memory.kind,
            )
        )
    return results


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--iterations", type=int, default=10, help="timed evaluations per run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--reference", action="store_true", help="interleave with the reference")
    parser.add_argument("--rounds", type=int, default=2, help="with --reference")
    parser.add_argument("--quality-size", type=int, default=256, help="with --reference")
    parser.add_argument("--quality-iterations", type=int, default=60, help="with --reference")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("ATELIER_MODELS_DIR", "models")),
        help="where vgg19-dcbb9e9d.pth is looked for",
    )
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    device = pick_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.reference:
        from gatys_versus_reference import compare

        compare(args, device)
        return 0
    print(f"device: {describe(device)}; torch {torch.__version__}")
    print(f"{args.iterations} timed evaluations per run (L-BFGS), first evaluation excluded")
    header = f"{'backbone':<20}{'size':>6}{'output':>11}{'s/iter':>10}{'total s':>9}  peak memory"
    print(header)
    print("-" * len(header))
    for name in args.backbones:
        try:
            results = measure(name, args.models_dir, device, args.sizes, args.iterations)
        except BackboneUnavailable as exc:
            print(f"{name:<20}skipped: {exc}")
            continue
        for result in results:
            output = f"{result.output[0]}x{result.output[1]}"
            print(
                f"{result.backbone:<20}{result.size:>6}{output:>11}"
                f"{result.seconds_per_iteration:>10.4f}{result.total_seconds:>9.1f}"
                f"  {result.peak_mib:,.0f} MiB {result.memory_kind}"
                f" (+{result.growth_mib:,.0f} during the run)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
