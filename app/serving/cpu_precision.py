"""Which precision the CPU fast networks run in: bf16 where this CPU is fast at it, else fp32.

bf16 passed the quality gate on real photos at 1024 px (mean absolute difference to fp32 under
2/255, no banding; bench/quality.py), so `auto` uses it wherever the CPU has bf16 matrix units.
Int8 (onnxruntime static quantization, per channel, calibrated on photos) failed the gate by far
(about 12/255 on the 26-style net) without being faster, so it is not offered.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from app.core.config import CpuPrecision
from app.core.cpu_features import has_fast_bf16

log = logging.getLogger("atelier.inference")

Precision = Literal["fp32", "bf16"]


def choose_cpu_precision(requested: CpuPrecision, flags: frozenset[str] | None = None) -> Precision:
    """`fp32` stays fp32; `auto` and `bf16` give bf16 only on a CPU with fast bf16 (AMX or
    AVX-512 BF16) and with OpenVINO installed, else the safe fp32 path (with a warning when
    bf16 was asked for explicitly)."""
    if requested == "fp32":
        return "fp32"
    if not has_fast_bf16(flags):
        if requested == "bf16":
            log.warning("ATELIER_CPU_PRECISION=bf16, but this CPU has no fast bf16: using fp32")
        return "fp32"
    if importlib.util.find_spec("openvino") is None:
        log.warning("openvino is not installed: the CPU networks run in fp32")
        return "fp32"
    return "bf16"
