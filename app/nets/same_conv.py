"""TensorFlow's "SAME" padding for convolutions of networks trained in TensorFlow."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding (extra pixel bottom/right on even inputs).

    Networks trained in TensorFlow (EfficientNet-Lite0, Magenta's style predictor) need it:
    symmetric padding shifts every stride-2 layer by half a pixel, and their features drift.
    Same constructor and state-dict keys as `nn.Conv2d`.
    """

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            # Symmetric (every stride-1 layer): let the convolution pad, which avoids a copy.
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), 1, self.groups)
        padded = F.pad(x, [left, right, top, bottom])
        return F.conv2d(padded, self.weight, self.bias, self.stride, 0, 1, self.groups)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding so the output has ceil(size / stride) positions."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
