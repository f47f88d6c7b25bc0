"""CPU bf16 path: the same ONNX export, compiled by OpenVINO with bf16 inference precision.

On CPUs with AMX or AVX-512 BF16, OpenVINO's CPU plugin runs the convolutions (and keeps the
activations between them) in bf16 on oneDNN kernels: several times faster than onnxruntime
fp32 and within a few levels of it (bench/predict.py, bench/quality.py; the figures are in
docs/performance.md). Elsewhere bf16 is emulated and slow, so `cpu_precision` only picks
this path when the CPU flags say it is fast.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from ml_dtypes import bfloat16


class OpenVinoModule:
    """An exported network compiled for the CPU in bf16: numpy arrays in, the output out.

    An OpenVINO infer request is not safe to share between threads, so each inference thread
    gets its own; the compiled model (weights, kernels) is shared.
    """

    precision = "bf16"

    def __init__(
        self,
        path: Path,
        input_names: list[str],
        *,
        threads: int | None = None,
        release_memory: bool = False,
    ) -> None:
        """`release_memory` frees the intermediate buffers after every call (tiled inference
        runs many graphs in turn; each would otherwise keep a tile-sized peak)."""
        self._compiled = _compile(path, threads)
        self._input_names = input_names
        # Inputs the exporter dropped (unused by the output) are accepted and not fed.
        self._graph_inputs = {name for port in self._compiled.inputs for name in port.names}
        self._local = threading.local()
        self._release = release_memory
        self.path = path

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        (output,) = self.run_all(*inputs)
        return output

    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph, in order (segments of a network have several)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        feeds = {
            name: value
            for name, value in zip(self._input_names, inputs, strict=True)
            if name in self._graph_inputs
        }
        # share_outputs=False copies the result out of the request's buffer, which the next
        # call on this thread overwrites.
        result = request.infer(feeds, share_inputs=True, share_outputs=False)
        outputs = [result[port] for port in self._compiled.outputs]
        if self._release and hasattr(self._compiled, "release_memory"):
            self._compiled.release_memory()
        return outputs


class OpenVinoSegment:
    """One segment of a network cut at its norms (`app.serving.bands`), compiled when its
    first band runs and dropped after its last: a compiled model keeps part of its working
    memory (shape-dependent buffers) even after `release_memory()`, and a network has up to
    19 segments. One caller at a time (the runner runs one banded image at a time).

    The maps handed between segments (`bf16_inputs`, `bf16_outputs`) travel in bf16, the
    precision OpenVINO computes them in: in any other dtype every cut costs a conversion on
    each side, and OpenVINO's float16 one is a scalar reference kernel. Those arrays are
    `ml_dtypes.bfloat16`."""

    precision = "bf16"
    map_dtype = np.dtype(bfloat16)

    def __init__(
        self,
        path: Path,
        input_names: list[str],
        *,
        bf16_inputs: frozenset[str],
        bf16_outputs: frozenset[str],
        threads: int | None = None,
        static_shapes: bool = False,
    ) -> None:
        """`static_shapes`: compile for the shapes of the first run after each release (a
        segment run once per image, whose plan then shares buffers across its layers)."""
        self.path = path
        self._static = static_shapes
        self._input_names = input_names
        self._bf16_inputs = bf16_inputs
        self._bf16_outputs = bf16_outputs
        self._threads = threads
        self._model: object | None = None  # read once; compiled for each image
        self._compiled: object | None = None
        self._request: object | None = None
        self._graph_inputs: set[str] = set()

    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output, as views of the request's buffers: valid until the next call or
        `release()`, so the caller consumes each result before the next band."""
        import openvino as ov

        model = self._read()
        feeds: dict[str, object] = {}
        for name, value in zip(self._input_names, inputs, strict=True):
            if name not in self._graph_inputs:
                continue
            if name in self._bf16_inputs:
                bits = np.ascontiguousarray(value, dtype=bfloat16).view(np.uint16)
                feeds[name] = ov.Tensor(bits, bits.shape, ov.Type.bf16)
            else:
                feeds[name] = value
        if self._compiled is None:
            if self._static:
                given = zip(self._input_names, inputs, strict=True)
                shapes = {name: list(np.shape(v)) for name, v in given if name in feeds}
                model.reshape(shapes)  # type: ignore[attr-defined]
            self._compiled = _compile(model, self._threads)
            self._request = self._compiled.create_infer_request()  # type: ignore[attr-defined]
        compiled, request = self._compiled, self._request
        result = request.infer(feeds, share_inputs=True, share_outputs=True)  # type: ignore[attr-defined]
        # a bf16 output comes back as float16-typed bits
        return [
            result[port].view(bfloat16) if port.any_name in self._bf16_outputs else result[port]
            for port in compiled.outputs  # type: ignore[attr-defined]
        ]

    def check(self) -> None:
        """Compile once and drop it: a graph OpenVINO cannot take fails here, when the runner
        can still run it on another backend, not on a request's first band."""
        _compile(self._read(), self._threads)

    def release(self) -> None:
        self._request = None
        self._compiled = None

    def _read(self) -> object:
        """The model, read once (compiled for each image)."""
        if self._model is None:
            self._model = self._bf16_model()
            self._graph_inputs = {name for port in self._model.inputs for name in port.names}  # type: ignore[attr-defined]
        return self._model

    def _bf16_model(self) -> object:
        """The exported graph (float32 at its edges) with the handed-on maps' tensors in bf16."""
        import openvino as ov

        model = ov.Core().read_model(str(self.path))
        steps = ov.preprocess.PrePostProcessor(model)
        for port in model.inputs:
            if port.any_name in self._bf16_inputs:
                steps.input(port.any_name).tensor().set_element_type(ov.Type.bf16)
        for port in model.outputs:
            if port.any_name in self._bf16_outputs:
                steps.output(port.any_name).tensor().set_element_type(ov.Type.bf16)
        return steps.build()


def _compile(model: Path | object, threads: int | None) -> object:
    """`model`: an ONNX file, or an `openvino.Model` already read."""
    import openvino as ov

    config: dict[str, object] = {
        "INFERENCE_PRECISION_HINT": "bf16",
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(model) if isinstance(model, Path) else model, "CPU", config)
