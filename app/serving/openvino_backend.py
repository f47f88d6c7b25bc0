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
        share_outputs: bool = False,
    ) -> None:
        """`release_memory` frees the intermediate buffers after every call (tiled inference
        runs many graphs in turn; each would otherwise keep a tile-sized peak). Without it
        they stay until `release()`: a caller running one graph many times in a row (the
        bands of a segment) frees them once, after the last. `share_outputs`: `run_all`
        returns views of the request's buffers, valid until the next call on this thread
        or `release()`, for callers that consume each result at once."""
        import openvino as ov

        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._input_names = input_names
        # Inputs the exporter dropped (unused by the output) are accepted and not fed.
        self._graph_inputs = {name for port in self._compiled.inputs for name in port.names}
        self._local = threading.local()
        self._release = release_memory
        self._share_outputs = share_outputs
        self.path = path

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        (output,) = self.run_all(*inputs)
        return np.array(output) if self._share_outputs else output

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
        result = request.infer(feeds, share_inputs=True, share_outputs=self._share_outputs)
        outputs = [result[port] for port in self._compiled.outputs]
        if self._release:
            self.release()
        return outputs

    def release(self) -> None:
        """Hand the intermediate buffers back (they are allocated again on the next call)."""
        if hasattr(self._compiled, "release_memory"):
            self._compiled.release_memory()
