"""What this CPU can do fast, read from the kernel rather than assumed.

The fleet mixes processors (some with AVX-512 VNNI/BF16 and AMX, some with AVX2 only), and a
bf16 or int8 path that is fast on one is slower than fp32 on another.
"""

from __future__ import annotations

import functools
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first processor's feature flags; empty where /proc/cpuinfo is missing (not Linux)."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_fast_bf16(flags: frozenset[str] | None = None) -> bool:
    """bf16 matrix units (AMX) or AVX-512 BF16: where bf16 autocast beats fp32 on the CPU."""
    flags = cpu_flags() if flags is None else flags
    return "amx_bf16" in flags or "avx512_bf16" in flags


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Int8 dot-product instructions, which make int8 convolutions faster than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
