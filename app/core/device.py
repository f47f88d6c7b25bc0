"""Device selection and torch threading, decided once per process."""

from __future__ import annotations

import contextlib
import os

import torch

from app.core.cpu_features import has_fast_bf16


def select_device(preference: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible; asking for `cuda` without one is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("ATELIER_DEVICE=cuda but no CUDA device is visible")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    return torch.device("cpu")


def configure_threads(intra_op: int | None, inter_op: int) -> None:
    """Set torch's pools; inter-op can only be set before first use, so failures are ignored."""
    torch.set_num_threads(intra_op or os.cpu_count() or 1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(inter_op)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a loss-network computation (training, Gatys) runs under bf16 autocast:
    `precision` "bf16" or "fp32" as asked; "auto" where the device does bf16 fast (a GPU that
    supports it, a CPU with AMX or AVX-512 BF16), fp32 elsewhere."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and has_fast_bf16()
