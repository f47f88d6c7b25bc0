"""CPU bf16 path: the same ONNX export, compiled by OpenVINO with bf16 inference precision.

On CPUs with AMX or AVX-512 BF16, OpenVINO's CPU plugin runs the convolutions (and keeps the
activations between them) in bf16 on oneDNN kernels: bench/predict.py measured it 3-4x
faster than onnxruntime fp32 for the 26-style net and 7x for TransformerNet at 256-1024 px,
within 2/255 mean absolute difference of fp32 on real photos at 1024 px (worst 1.9, all 26
styles; bench/quality.py). Elsewhere bf16 is emulated and slow, so `cpu_precision` only picks
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

    def __init__(self, path: Path, input_names: list[str], *, threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._input_names = input_names
        self._local = threading.local()
        self.path = path

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
        feeds = dict(zip(self._input_names, inputs, strict=True))
        # share_outputs=False copies the result out of the request's buffer, which the next
        # call on this thread overwrites.
        return request.infer(feeds, share_inputs=True, share_outputs=False)[0]
