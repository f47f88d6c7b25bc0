"""CPU fast path: run an ONNX export of our own torch modules with onnxruntime.

On CPUs, onnxruntime runs these networks faster than eager torch (bench/predict.py;
docs/performance.md has the figures), so onnxruntime fp32 is the safe CPU default; the large win
is bf16 (`openvino_backend`), which compiles the same file. The torch
module stays the source of truth: it is exported once per weights digest and cached beside the
converted weights. GPUs keep running torch.

Inputs and outputs are numpy arrays: the whole CPU request path stays out of torch, whose
OpenMP workers would otherwise spin on the same cores as onnxruntime's after every small op.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.core.files import atomic_path
from app.weights import onnx_export
from app.weights.onnx_export import DynamicAxes

# Bump when a network's forward changes: the export cache key includes it with the weights.
EXPORT_VERSION = 6


def state_digest(module: nn.Module, signature: str = "") -> str:
    """Short hash of what an export depends on: weights, module type, torch, opset, our code,
    and the call's `signature` (input kinds and names: one module exports differently with
    float16 inputs)."""
    digest = hashlib.sha256()
    digest.update(
        f"{type(module).__qualname__}|{torch.__version__}|{onnx_export.OPSET}|{EXPORT_VERSION}".encode()
    )
    digest.update(signature.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    path: Path,
    *,
    dynamic: bool = True,
    axes: DynamicAxes | None = None,
    output_names: list[str] | None = None,
) -> None:
    """Export atomically, with dynamic height/width on the first input and the output unless
    `dynamic` is off; `axes` names the dynamic axes instead (graphs with other outputs)."""
    if axes is None and dynamic:
        axes = {input_names[0]: {2: "h", 3: "w"}, "output": {1: "h", 2: "w"}}
    with atomic_path(path) as temporary:
        onnx_export.export_onnx(
            module,
            example,
            temporary,
            input_names=input_names,
            dynamic_axes=axes,
            output_names=output_names,
        )


def cached_export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    cache_dir: Path,
    *,
    dynamic: bool = True,
    axes: DynamicAxes | None = None,
    output_names: list[str] | None = None,
) -> Path:
    """The ONNX file of `module`, exported on first use and reused while its digest holds."""
    name = getattr(module, "export_name", type(module).__name__)
    kinds = [(str(x.dtype), x.dim()) for x in example]
    signature = repr((kinds, input_names, output_names, axes, dynamic))
    path = cache_dir / f"{name}-{state_digest(module, signature)}.onnx"
    if not path.exists():
        export_onnx(
            module,
            example,
            input_names,
            path,
            dynamic=dynamic,
            axes=axes,
            output_names=output_names,
        )
    return path


class OnnxModule:
    """An exported network run by onnxruntime: numpy arrays in, the graph's output out."""

    precision = "fp32"
    map_dtype = np.dtype(np.float32)  # of maps handed between segments (`bands`)

    def __init__(
        self,
        path: Path,
        input_names: list[str],
        *,
        threads: int | None = None,
        shrink_arena: bool = False,
        arena: bool = True,
    ) -> None:
        """`shrink_arena` hands the activations' memory back after every run. onnxruntime's
        arena otherwise keeps the peak of every size it has seen, held for good, at the price
        of some speed per run (docs/operations.md, `ATELIER_CPU_SHRINK_ARENA`).
        `arena=False` allocates without an arena at all: for the many graphs of tiled
        inference, which would otherwise each keep a tile-sized peak."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = arena
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._run_options = ort.RunOptions()
        if shrink_arena:
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._input_names = input_names
        # The exporter drops inputs no output depends on (a tile-statistics graph that stops
        # before a style's conditioning is used): such inputs are accepted and not fed.
        self._graph_inputs = {node.name for node in self._session.get_inputs()}
        self.path = path

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        (output,) = self.run_all(*inputs)
        return output

    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph, in order (segments of a network have several)."""
        feeds = {
            name: value
            for name, value in zip(self._input_names, inputs, strict=True)
            if name in self._graph_inputs
        }
        return self._session.run(None, feeds, self._run_options)

    def release(self) -> None:
        """Nothing to hand back: without an arena every run frees what it allocated, and with
        one `shrink_arena` decides."""
