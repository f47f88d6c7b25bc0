"""Torch side of the networks: the pixel adapter every backend runs, and eager torch execution.

`PixelScale` is what gets exported: uint8-range pixels in, rounded uint8 HxWx3 out, so scaling,
clamping, rounding and the layout change run inside the graph instead of as extra passes over
the image in Python. `TorchNetwork` runs such a module eagerly (CUDA, or `cpu_backend=torch`)
behind the same numpy-in, numpy-out call as the ONNX Runtime and OpenVINO paths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PixelScale(nn.Module):
    """Adapts a network to pixels: (N,3,H,W) floats in 0..255 in, (N,H,W,3) uint8 out."""

    def __init__(self, net: nn.Module, *, unit_range: bool) -> None:
        super().__init__()
        self.net = net
        self.unit_range = unit_range
        self.export_name = type(net).__name__

    def forward(self, x: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        if self.unit_range:
            y = self.net(x / 255.0, *condition).float() * 255.0
        else:
            y = self.net(x, *condition).float()
        # floor(y + 0.5) rounds half up whatever the cast does (truncate or round-to-nearest).
        y = torch.floor(y.clamp(0.0, 255.0) + 0.5)
        return y.to(torch.uint8).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class CudaOptions:
    """GPU-only speed options. `compile_bucket` pads inputs to multiples of it so
    torch.compile sees a bounded set of shapes (a few extra border pixels per image)."""

    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_bucket: int = 128


class TorchNetwork:
    """Runs a torch module eagerly on `device`; numpy arrays in, numpy array out."""

    map_dtype = np.dtype(np.float32)  # of maps handed between segments (`bands`)

    def __init__(
        self, module: nn.Module, device: torch.device, options: CudaOptions | None = None
    ) -> None:
        self.options = options or CudaOptions()
        self.device = device
        if device.type == "cuda" and self.options.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if device.type == "cuda" and self.options.compile:
            module = torch.compile(module, dynamic=False)
        self._module = module
        self.precision = self.options.precision if device.type == "cuda" else "fp32"

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        (output,) = self.run_all(*inputs)
        return output

    @torch.inference_mode()
    def run_all(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Every output of the module, in order (segments of a network return several)."""
        tensors = [torch.from_numpy(np.asarray(array)).to(self.device) for array in inputs]
        if self.device.type == "cuda" and self.options.channels_last:
            tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        with self._autocast():
            output = self._module(*tensors)
        outputs = output if isinstance(output, tuple) else (output,)
        return [
            o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs
        ]

    def release(self) -> None:
        """Nothing to hand back: eager torch frees activations as each call returns."""

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        dtype = _AUTOCAST.get(self.precision)
        if self.device.type != "cuda" or dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)
