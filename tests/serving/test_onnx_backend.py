"""The export cache: one file per module and per way of calling it."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from app.serving.onnx_backend import cached_export


class _Widening(nn.Module):
    """Computes in float32 whatever it is given, like a segment between float16 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float())


def _input_type(path: Path) -> int:
    return onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type


def test_inputs_of_another_dtype_get_their_own_export(tmp_path: Path) -> None:
    """The same weights called with float16 inputs export another graph: reusing the float32
    file would make every backend convert each input back and forth."""
    module = _Widening().eval()
    single = cached_export(module, (torch.rand(1, 3, 8, 8),), ["x"], tmp_path)
    half = cached_export(module, (torch.rand(1, 3, 8, 8).half(),), ["x"], tmp_path)
    assert single != half
    assert _input_type(single) == onnx.TensorProto.FLOAT
    assert _input_type(half) == onnx.TensorProto.FLOAT16
    again = cached_export(module, (torch.rand(1, 3, 16, 16),), ["x"], tmp_path)
    assert again == single  # another size of the same kind reuses the file
