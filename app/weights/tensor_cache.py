"""A converted-weights cache: tensors saved as safetensors beside the data, rebuilt when stale.

Converting ONNX files (parsing protobuf, dequantizing) takes seconds; loading safetensors takes
milliseconds. A cache is used while it is newer than its source and, when the converter declares
a version, was written by that version; an unreadable cache is rebuilt, never trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from app.core.files import atomic_path


def cached_tensors(
    source: Path,
    cache_file: Path,
    convert: Callable[[], dict[str, torch.Tensor]],
    *,
    version: str | None = None,
) -> dict[str, torch.Tensor]:
    """`convert()`'s tensors, from `cache_file` while it is fresh for `source` and `version`."""
    if cache_file.is_file() and cache_file.stat().st_mtime >= source.stat().st_mtime:
        try:
            if version is None or _written_by(cache_file) == version:
                return load_file(str(cache_file))
        except (SafetensorError, OSError):
            pass  # unreadable: rebuilt below
    tensors = {name: tensor.contiguous() for name, tensor in convert().items()}
    save_atomic(tensors, cache_file, {"converter": version or "", "source": source.name})
    return tensors


def _written_by(cache_file: Path) -> str | None:
    with safe_open(str(cache_file), framework="pt") as handle:
        return (handle.metadata() or {}).get("converter")


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
