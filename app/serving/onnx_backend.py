"""CPU fast path: run an ONNX export of our own torch modules with onnxruntime.

On the 2-core Xeon of bench/predict.py (networks alone, interleaved on the same input), eager
torch took 1.8x onnxruntime's time for the 26-style net at 256-1024 px and 1.3-1.5x for
TransformerNet (a more loaded run: 1.5x and 0.9-1.3x): onnxruntime fp32 is the safe CPU default;
the large win is bf16 (`openvino_backend`), which compiles the same file. The torch
module stays the source of truth: it is exported once per weights digest and cached beside the
converted weights. GPUs keep running torch.

Inputs and outputs are numpy arrays: the whole CPU request path stays out of torch, whose
OpenMP workers would otherwise spin on the same cores as onnxruntime's after every small op.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
# torch.onnx.export keeps global state: two exports at once (two apps loading in one process)
# corrupt each other, so exports are serialised.
_EXPORT_LOCK = threading.Lock()


# Bump when a network's forward changes: the export cache key includes it with the weights.
EXPORT_VERSION = 3


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


# What every cold export prints, each understood: (category, message regex, why it is harmless).
UNDERSTOOD_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Deliberate: the TorchScript exporter (dynamo=False) handles our dynamic-size graphs.
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    # Raised by torch's own legacy exporter internals, not by our call.
    (DeprecationWarning, r"The feature will be removed\. Please remove usage of this function"),
    # Reflection padding's reversed slices (step -1) stay Slice ops: correct, only not folded.
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded"),
    # Instance norm always normalises with the input's own statistics, as the nets were trained.
    (UserWarning, r"ONNX export mode is set to TrainingMode\.EVAL, but operator 'instance_norm'"),
    # A shape check (the transformer's minimum side) traced once; the runner checks sizes first.
    (torch.jit.TracerWarning, r"Converting a tensor to a Python boolean"),
)
# Only for fixed-size exports (the style predictor, always 256x256): TF "SAME" paddings computed
# from the traced shape are exact there. With dynamic sizes this warning would be a real bug.
FIXED_SIZE_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (torch.jit.TracerWarning, r"Converting a tensor to a Python float"),
)


@contextlib.contextmanager
def understood_export_warnings_silenced(*, fixed_size: bool = False) -> Iterator[None]:
    """Hide exactly the warnings above during an export; anything else still shows."""
    understood = UNDERSTOOD_EXPORT_WARNINGS + (FIXED_SIZE_EXPORT_WARNINGS if fixed_size else ())
    with warnings.catch_warnings():
        for category, message in understood:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    path: Path,
    *,
    dynamic: bool = True,
) -> None:
    """Export (dynamic height/width on the first input unless `dynamic` is off), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    axes = {input_names[0]: {2: "h", 3: "w"}, "output": {1: "h", 2: "w"}} if dynamic else None
    try:
        with _EXPORT_LOCK, understood_export_warnings_silenced(fixed_size=not dynamic):
            torch.onnx.export(
                module,
                example,
                tmp,
                input_names=input_names,
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    cache_dir: Path,
    *,
    dynamic: bool = True,
) -> Path:
    """The ONNX file of `module`, exported on first use and reused while its digest holds."""
    name = getattr(module, "export_name", type(module).__name__)
    path = cache_dir / f"{name}-{state_digest(module)}.onnx"
    if not path.exists():
        export_onnx(module, example, input_names, path, dynamic=dynamic)
    return path


class OnnxModule:
    """An exported network run by onnxruntime: numpy arrays in, the graph's output out."""

    precision = "fp32"

    def __init__(
        self,
        path: Path,
        input_names: list[str],
        *,
        threads: int | None = None,
        shrink_arena: bool = False,
    ) -> None:
        """`shrink_arena` hands the activations' memory back after every run. onnxruntime's
        arena otherwise keeps the peak of every size it has seen (measured: +0.4 GiB after 20
        predictions around 1024 px, held for good), at the price of ~20% per 1024 px run."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._run_options = ort.RunOptions()
        if shrink_arena:
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._input_names = input_names
        self.path = path

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        feeds = dict(zip(self._input_names, inputs, strict=True))
        (output,) = self._session.run(None, feeds, self._run_options)
        return output
