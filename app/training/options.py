"""What a fast-style training run may be asked for, with bounds a public API can enforce."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from app.perceptual.backbones import LossWeights

TRAINING_BACKBONES: tuple[str, ...] = ("auto", "vgg16", "efficientnet-lite0")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

MAX_ITERATIONS = 100_000
MAX_BATCH_SIZE = 32
MIN_CROP, MAX_CROP = 64, 512
MIN_STYLE_SIZE, MAX_STYLE_SIZE = 64, 1024


@dataclass(frozen=True)
class LossTaps:
    """Which loss-network layers carry content and style, and the weights that suit them."""

    content: tuple[str, ...]
    style: tuple[str, ...]
    weights: LossWeights


# VGG-16: Johnson et al.'s taps. Losses are the relative errors of app/perceptual/losses.py, so the
# weights are O(1) ratios, not pytorch/examples' 1e5/1e10.
# EfficientNet-Lite0: content at the block-2 output (1/4 resolution, 24 channels), the
# counterpart of VGG's relu2_2; style at the Gatys taps plus "rgb", the Gram matrix of the pixels
# themselves (the palette). Chosen from short pilot runs on mosaic (README, "Training your own
# style"): the deeper block-4 content tap, a style weight of 20 or more, or dropping the stem all
# let the network trade the photo for flat black and cream regions cut by hatching.
DEFAULT_TAPS: dict[str, LossTaps] = {
    "vgg16": LossTaps(
        content=("relu2_2",),
        style=("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        weights=LossWeights(content=1.0, style=5.0, tv=1.0),
    ),
    "efficientnet-lite0": LossTaps(
        content=("block2",),
        style=("rgb", "stem", "block1_expand", "block3_expand", "block5_expand"),
        weights=LossWeights(content=1.0, style=10.0, tv=200.0),
    ),
}


@dataclass(frozen=True)
class TrainOptions:
    """One training run. Weights left as None take the loss network's defaults (DEFAULT_TAPS).

    `precision` "auto" trains under bf16 autocast where the device has fast bf16 (AMX or
    AVX-512 BF16 CPUs; bench/train.py measures the gain) and in fp32 elsewhere; the
    weights stay fp32.
    `warm_start` asks the caller to begin from a network that already stylizes (the in-box
    style the server names) instead of random weights; the engine takes the weights themselves.
    `range_weight` penalises outputs outside 0..255 before they are clamped: the loss network
    only ever sees the clamped image that serving returns, and without the penalty a network
    learns to push whole regions past the clamp (the "saturated blobs" failure).
    """

    iterations: int = 1000
    batch_size: int = 2
    crop_size: int = 192
    style_size: int = 320
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    range_weight: float = 10.0
    learning_rate: float = 1e-3
    seed: int = 0
    backbone: str = "auto"
    precision: str = "auto"
    checkpoint_interval: int = 100
    preview_interval: int = 100
    warm_start: bool = True

    def __post_init__(self) -> None:
        _require_int(self.iterations, 1, MAX_ITERATIONS, "iterations")
        _require_int(self.batch_size, 1, MAX_BATCH_SIZE, "batch_size")
        _require_int(self.crop_size, MIN_CROP, MAX_CROP, "crop_size")
        _require(self.crop_size % 4 == 0, "crop_size must be a multiple of 4")
        _require_int(self.style_size, MIN_STYLE_SIZE, MAX_STYLE_SIZE, "style_size")
        for label in ("content_weight", "style_weight", "tv_weight"):
            weight = getattr(self, label)
            _require(
                weight is None or (_is_finite(weight) and weight >= 0),
                f"{label} must be a finite number >= 0 (or null for the default)",
            )
        _require(
            _is_finite(self.range_weight) and self.range_weight >= 0,
            "range_weight must be a finite number >= 0",
        )
        _require(
            _is_finite(self.learning_rate) and 0 < self.learning_rate <= 0.1,
            "learning_rate must be in (0, 0.1]",
        )
        _require_int(self.seed, 0, 2**63 - 1, "seed")
        _require(
            self.backbone in TRAINING_BACKBONES,
            f"backbone must be one of {', '.join(TRAINING_BACKBONES)}",
        )
        _require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        _require_int(self.checkpoint_interval, 0, MAX_ITERATIONS, "checkpoint_interval")
        _require_int(self.preview_interval, 0, MAX_ITERATIONS, "preview_interval")
        _require(isinstance(self.warm_start, bool), "warm_start must be true or false")

    def weights_for(self, backbone: str) -> LossWeights:
        defaults = DEFAULT_TAPS[backbone].weights
        return LossWeights(
            content=defaults.content if self.content_weight is None else self.content_weight,
            style=defaults.style if self.style_weight is None else self.style_weight,
            tv=defaults.tv if self.tv_weight is None else self.tv_weight,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        """Build from stored or submitted options, naming any key that is not an option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        _require(not unknown, f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_int(value: object, low: int, high: int, label: str) -> None:
    _require(
        _is_int(value) and low <= value <= high,  # type: ignore[operator]
        f"{label} must be a whole number in {low}..{high}",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
