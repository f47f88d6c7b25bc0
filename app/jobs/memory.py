"""Running out of memory, recognised the same way for every job kind and device."""

from __future__ import annotations

import gc

import torch


class JobOutOfMemory(Exception):
    """The engine ran out of memory with no (further) smaller retry allowed; the message is the
    job's readable reason."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Accelerator OOM (torch.OutOfMemoryError, which torch.cuda.OutOfMemoryError is), host
    MemoryError, and torch's CPU allocator failure, which is a plain RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def memory_kind(exc: BaseException) -> str:
    return "GPU memory" if isinstance(exc, torch.OutOfMemoryError) else "memory"


def release_memory(device: torch.device) -> None:
    """Give back what a failed run held before running again on the same device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
