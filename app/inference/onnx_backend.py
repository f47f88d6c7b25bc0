"""CPU fast path: run an ONNX export of our own torch modules with onnxruntime.

On CPU, onnxruntime's fused kernels (InstanceNormalization, Conv+activation) beat eager torch by
roughly 2x for these small convolutional networks. The torch module stays the source of truth:
it is exported once per weights digest and cached beside the converted weights. GPUs keep
running torch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
# torch.onnx.export keeps global state: two exports at once (two apps loading in one process)
# corrupt each other, so exports are serialised.
_EXPORT_LOCK = threading.Lock()


# Bump when a network's forward changes: the export cache key includes it with the weights.
EXPORT_VERSION = 2


def state_digest(module: nn.Module) -> str:
    """Short hash of what an export depends on: weights, module type, torch, opset, our code."""
    digest = hashlib.sha256()
    digest.update(
        f"{type(module).__qualname__}|{torch.__version__}|{OPSET}|{EXPORT_VERSION}".encode()
    )
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    path: Path,
) -> None:
    """Export with dynamic height/width on the first input; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with _EXPORT_LOCK:
            torch.onnx.export(
                module,
                example,
                tmp,
                input_names=input_names,
                output_names=["output"],
                dynamic_axes={input_names[0]: {2: "h", 3: "w"}, "output": {2: "h", 3: "w"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OnnxModule:
    """Callable like the torch module it was exported from, for CPU tensors."""

    def __init__(
        self,
        module: nn.Module,
        example: tuple[torch.Tensor, ...],
        input_names: list[str],
        cache_dir: Path,
        *,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        name = getattr(module, "export_name", type(module).__name__)
        path = cache_dir / f"{name}-{state_digest(module)}.onnx"
        if not path.exists():
            export_onnx(module, example, input_names, path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_names = input_names
        self.path = path

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {
            name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
            for name, t in zip(self._input_names, inputs, strict=True)
        }
        (output,) = self._session.run(None, feeds)
        return torch.from_numpy(output)
