"""Gatys, Ecker & Bethge optimisation: find the image whose features match a content image's
and whose Gram matrices match one or more style images'.

Pure torch and numpy, so the same `run` serves the in-process job runner, Celery workers and the
benchmark. Budgets count objective evaluations (not optimiser steps) because evaluations are what
cost time, and L-BFGS may take several per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from app.core.progress import stop_if_asked
from app.gatys.tiles import (
    Reach,
    TilePlan,
    measure_reach,
    tiled_grams,
    tiled_objective,
    tiled_targets,
)
from app.imaging.color import RGB_TO_YCBCR
from app.perceptual.backbones import Backbone, LossWeights
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss

OptimizerName = Literal["lbfgs", "adam"]
InitName = Literal["content", "noise", "style"]
PreserveColor = Literal["none", "luminance", "histogram"]

OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")
INITS: tuple[str, ...] = ("content", "noise", "style")
PRESERVE_COLORS: tuple[str, ...] = ("none", "luminance", "histogram")

MIN_SIZE = 16  # below this the deepest taps shrink to a pixel or two and Grams mean nothing
MAX_STYLE_SCALE = 4.0  # a style image 4x the output already costs 16x the memory of the output
LBFGS_HISTORY = 50
# In tiles the image is print size, and each remembered step costs two image-sized vectors.
LBFGS_TILED_HISTORY = 10
# A tiled evaluation's cost per processed pixel against a whole one's: its first pass over the
# tiles is one more forward, and a forward is about a third of a forward and backward.
TILED_EVALUATION_COST = 4 / 3
ADAM_LR = 0.02  # pixels live in 0..1; larger steps leave visible speckle before TV can smooth it


@dataclass(frozen=True)
class GatysOptions:
    """What to optimise and how. Weights left as None take the backbone's defaults.

    `scales` runs coarse-to-fine (each scale starts from the previous result, upsampled) and
    splits `iterations` evenly across them; the output's longest side is then `scales[-1]` and
    `size` is not used. `style_scale` sizes the style images relative to the output's longest side.
    """

    iterations: int = 300
    size: int = 512
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    optimizer: OptimizerName = "lbfgs"
    init: InitName = "content"
    seed: int | None = None
    style_scale: float = 1.0
    preserve_color: PreserveColor = "none"
    style_blend: tuple[float, ...] | None = None
    scales: tuple[int, ...] | None = None
    preview_every: int = 0

    def __post_init__(self) -> None:
        _require(_is_int(self.iterations) and self.iterations >= 1, "iterations must be >= 1")
        _require(_is_int(self.size) and self.size >= MIN_SIZE, f"size must be >= {MIN_SIZE}")
        for label, weight in (
            ("content_weight", self.content_weight),
            ("style_weight", self.style_weight),
            ("tv_weight", self.tv_weight),
        ):
            _require(
                weight is None or (_is_finite(weight) and weight >= 0),
                f"{label} must be a finite number >= 0 (or null for the backbone default)",
            )
        _require(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}")
        _require(self.init in INITS, f"init must be one of {INITS}")
        _require(
            self.preserve_color in PRESERVE_COLORS,
            f"preserve_color must be one of {PRESERVE_COLORS}",
        )
        _require(
            self.seed is None or (_is_int(self.seed) and 0 <= self.seed < 2**63),
            "seed must be an integer in [0, 2**63)",
        )
        _require(
            _is_finite(self.style_scale) and 0 < self.style_scale <= MAX_STYLE_SCALE,
            f"style_scale must be in (0, {MAX_STYLE_SCALE}]",
        )
        if self.style_blend is not None:
            _require(len(self.style_blend) > 0, "style_blend must not be empty")
            _require(
                all(_is_finite(w) and w >= 0 for w in self.style_blend),
                "style_blend weights must be finite numbers >= 0",
            )
            _require(sum(self.style_blend) > 0, "style_blend weights must not all be zero")
        if self.scales is not None:
            _require(len(self.scales) > 0, "scales must not be empty")
            _require(
                all(_is_int(s) and s >= MIN_SIZE for s in self.scales),
                f"every scale must be an integer >= {MIN_SIZE}",
            )
            _require(
                all(a < b for a, b in zip(self.scales, self.scales[1:], strict=False)),
                "scales must be strictly increasing (coarse to fine)",
            )
            _require(
                self.iterations >= len(self.scales),
                "iterations must be at least the number of scales",
            )
        _require(
            _is_int(self.preview_every) and self.preview_every >= 0,
            "preview_every must be >= 0 (0 disables previews)",
        )

    @property
    def output_size(self) -> int:
        """Longest side of the returned image."""
        return self.scales[-1] if self.scales else self.size

    def style_side(self, size: int | None = None) -> int:
        """Longest side the style images are used at for an output of `size` (default: the
        final one); the one place this is computed, so stored inputs match what runs."""
        return max(MIN_SIZE, round((size or self.output_size) * self.style_scale))


@dataclass(frozen=True)
class Progress:
    """One objective evaluation. Losses are the weighted terms, so they sum to the objective.

    `eta_s` is None on the first evaluation, which includes one-off warm-up (allocations,
    cuDNN autotuning) and would mislead.
    """

    iteration: int
    total: int
    content_loss: float
    style_loss: float
    tv_loss: float
    elapsed_s: float
    eta_s: float | None
    scale: int


def run(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    options: GatysOptions,
    backbone: Backbone,
    *,
    device: torch.device | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_preview: Callable[[np.ndarray], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    bf16: bool = False,
    tile_pixels: int = 0,
) -> np.ndarray:
    """Stylise `content` (HxWx3 uint8) with `styles`; returns an HxWx3 uint8 image whose longest
    side is `options.output_size` and whose aspect ratio follows the content.

    `bf16` runs the backbone under bf16 autocast (for CPUs with bf16 matrix units and GPUs);
    the image, the targets, the Gram matrices and the losses stay fp32, so L-BFGS sees fp32
    values and gradients.

    `tile_pixels` > 0: a scale (or style image) with more pixels than that runs through the
    backbone in tiles of about that many pixels (`app/gatys/tiles.py`), with the same objective
    and gradient, so the backbone's memory follows the tile, not the image; backbones that
    cannot be cut exactly (`Backbone.runs_in_tiles`) run whole.

    `on_progress` and `should_cancel` are called on every evaluation, so they must be cheap
    (read a flag, not a database). Raises ValueError for unusable inputs and Cancelled when
    `should_cancel` returns True.
    """
    _check_image(content, "content")
    if len(styles) == 0:
        raise ValueError("at least one style image is required")
    for index, style in enumerate(styles):
        _check_image(style, f"style {index}")
    blend = _blend_weights(options.style_blend, len(styles))
    device = torch.device(device) if device is not None else backbone.device
    if device != backbone.device:
        raise ValueError(f"backbone lives on {backbone.device}, but run was asked for {device}")
    weights = _resolve_weights(options, backbone.default_weights)

    started = time.perf_counter()
    with _accelerator_settings(device, deterministic=options.seed is not None):
        tiled = tile_pixels if backbone.runs_in_tiles else 0
        job = _Job(content, styles, blend, options, backbone, weights, device, started, bf16, tiled)
        return job.run(on_progress, on_preview, should_cancel)


class _Job:
    """State of one `run` call, kept together so the evaluation closure stays small."""

    def __init__(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        blend: list[float],
        options: GatysOptions,
        backbone: Backbone,
        weights: LossWeights,
        device: torch.device,
        started: float,
        bf16: bool = False,
        tile_pixels: int = 0,
    ) -> None:
        self.options = options
        self.bf16 = bf16
        self.backbone = backbone
        self.weights = weights
        self.device = device
        self.started = started
        self.blend = blend
        content_rgb = _to_tensor(content)
        style_rgbs = [_to_tensor(style) for style in styles]
        if options.preserve_color == "histogram":
            style_rgbs = [_match_colour(style, content_rgb) for style in style_rgbs]
        self.content_rgb = content_rgb
        if options.preserve_color == "luminance":
            # Optimise a grey image: style texture without the style's palette (Gatys et al. 2016).
            content_luma = _luma(content_rgb)
            self.content_work = content_luma.expand(-1, 3, -1, -1)
            self.style_work = [
                _match_moments(_luma(style), content_luma).expand(-1, 3, -1, -1)
                for style in style_rgbs
            ]
        else:
            self.content_work = content_rgb
            self.style_work = style_rgbs
        self.generator = torch.Generator(device="cpu")
        if options.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(options.seed)

        self.tile_pixels = tile_pixels
        self._reach: Reach | None = None
        self.sizes = options.scales or (options.size,)
        self.budgets = _split(options.iterations, len(self.sizes))
        height, width = content_rgb.shape[-2:]
        self.work = [
            self._evaluation_work(*_fit_long_side(height, width, size)) for size in self.sizes
        ]
        self.total_work = sum(b * w for b, w in zip(self.budgets, self.work, strict=True))
        self.done = 0
        self.work_done = 0.0
        self.first_done = (started, 0.0)

    def run(
        self,
        on_progress: Callable[[Progress], None] | None,
        on_preview: Callable[[np.ndarray], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> np.ndarray:
        image: Tensor | None = None
        for size, budget, work in zip(self.sizes, self.budgets, self.work, strict=True):
            stop_if_asked(should_cancel)
            image = self._optimise_scale(
                size, budget, work, image, on_progress, on_preview, should_cancel
            )
        assert image is not None
        return _to_uint8(self._finish(image))

    def _optimise_scale(
        self,
        size: int,
        budget: int,
        work: float,
        previous: Tensor | None,
        on_progress: Callable[[Progress], None] | None,
        on_preview: Callable[[np.ndarray], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> Tensor:
        content = _resize_long_side(self.content_work, size).to(self.device)
        plan = self._plan(*content.shape[-2:])
        content_targets, style_targets = self._targets(content, size, plan)
        image = self._initial_image(content, previous).requires_grad_(True)
        backbone, weights, options = self.backbone, self.weights, self.options
        evaluations = 0

        def evaluate() -> Tensor:
            nonlocal evaluations
            stop_if_asked(should_cancel)
            optimiser.zero_grad(set_to_none=True)
            if plan is None:
                weighted = self._whole_objective(image, content_targets, style_targets)
            else:
                targets = (content_targets, style_targets)
                weighted = tiled_objective(
                    image, backbone, *targets, weights, plan, self.bf16, should_cancel
                )
            objective = (weighted[0] + weighted[1] + weighted[2]).detach()
            evaluations += 1
            self.done += 1
            self.work_done += work
            if on_progress is not None:
                # One device-to-host copy for all three terms: each sync stalls a GPU pipeline.
                terms = torch.stack(weighted).detach().tolist()
                on_progress(self._progress(size, *terms))
            if (
                on_preview is not None
                and options.preview_every
                and (self.done % options.preview_every == 0)
            ):
                on_preview(_to_uint8(self._finish(image.detach())))
            return objective

        optimiser: torch.optim.Optimizer
        if options.optimizer == "lbfgs":
            history = LBFGS_HISTORY if plan is None else LBFGS_TILED_HISTORY
            optimiser = torch.optim.LBFGS(
                [image], lr=1.0, history_size=history, max_iter=budget, max_eval=budget
            )
            while evaluations < budget:
                # A step ends early when progress stalls; the next one resumes from its history.
                optimiser.param_groups[0]["max_iter"] = budget - evaluations
                optimiser.param_groups[0]["max_eval"] = budget - evaluations
                optimiser.step(evaluate)
        else:
            optimiser = torch.optim.Adam([image], lr=ADAM_LR)
            for _ in range(budget):
                optimiser.step(evaluate)
                with torch.no_grad():
                    image.clamp_(0.0, 1.0)
        return image.detach().clamp(0.0, 1.0)

    def _whole_objective(
        self, image: Tensor, content_targets: dict[str, Tensor], style_targets: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The weighted content, style and TV terms, backpropagated into `image.grad`."""
        weights = self.weights
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = {name: f.float() for name, f in self.backbone(image).items()}
        c_loss = _mean_of(content_loss(features[n], t) for n, t in content_targets.items())
        s_loss = _mean_of(style_loss(gram_matrix(features[n]), t) for n, t in style_targets.items())
        tv_loss = total_variation_loss(image)
        weighted = (weights.content * c_loss, weights.style * s_loss, weights.tv * tv_loss)
        (weighted[0] + weighted[1] + weighted[2]).backward()
        return weighted

    def _evaluation_work(self, height: int, width: int) -> float:
        """What one evaluation at this size costs, in pixels of a whole evaluation, so that the
        ETA extrapolates from coarse scales to fine ones: a tiled evaluation computes its tiles'
        margins too, and runs one more forward pass."""
        plan = self._plan(height, width)
        if plan is None:
            return float(height * width)
        processed = sum(
            (tile.rows.high - tile.rows.low) * (tile.cols.high - tile.cols.low)
            for row in plan.tiles(height, width)
            for tile in row
        )
        return processed * TILED_EVALUATION_COST

    def _plan(self, height: int, width: int) -> TilePlan | None:
        """Tiles for an image above `tile_pixels`; None runs it whole."""
        if not self.tile_pixels or height * width <= self.tile_pixels:
            return None
        if self._reach is None:
            layers = self.backbone.content_layers + self.backbone.style_layers
            self._reach = measure_reach(self.backbone, list(dict.fromkeys(layers)))
        return self._reach.plan(self.tile_pixels)

    @torch.no_grad()
    def _targets(
        self, content: Tensor, size: int, plan: TilePlan | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Content features, and Gram targets blended across style images by weight."""
        content_layers = list(self.backbone.content_layers)
        if plan is None:
            content_targets = self.backbone(content, content_layers)
        else:
            content_targets = tiled_targets(self.backbone, content, content_layers, plan)
        style_targets: dict[str, Tensor] = {}
        style_size = self.options.style_side(size)
        style_layers = list(self.backbone.style_layers)
        for style, weight in zip(self.style_work, self.blend, strict=True):
            if weight == 0:
                continue
            image = _resize_long_side(style, style_size).to(self.device)
            style_plan = self._plan(*image.shape[-2:])
            if style_plan is None:
                grams = {n: gram_matrix(f) for n, f in self.backbone(image, style_layers).items()}
            else:
                grams = tiled_grams(self.backbone, image, style_layers, style_plan)
            for name, gram in grams.items():
                share = gram * weight
                style_targets[name] = (
                    style_targets[name] + share if name in style_targets else share
                )
        return content_targets, style_targets

    def _initial_image(self, content: Tensor, previous: Tensor | None) -> Tensor:
        height, width = content.shape[-2:]
        # L-BFGS flattens gradients with .view(), so the image must be a fresh contiguous tensor.
        if previous is not None:
            return _resize(previous, height, width).clone(memory_format=torch.contiguous_format)
        if self.options.init == "content":
            return content.clone(memory_format=torch.contiguous_format)
        if self.options.init == "noise":
            # Drawn on the CPU so a seed gives the same start on every device.
            noise = torch.rand(1, 3, height, width, generator=self.generator)
            return noise.to(self.device)
        strongest = max(range(len(self.blend)), key=self.blend.__getitem__)
        style = _resize(self.style_work[strongest], height, width).to(self.device)
        return style.clone(memory_format=torch.contiguous_format)

    def _progress(self, size: int, content: float, style: float, tv: float) -> Progress:
        now = time.perf_counter()
        eta: float | None = None
        if self.done == 1:
            self.first_done = (now, self.work_done)
        else:
            # The rate leaves out evaluation 1 and the setup before it (one-off warm-up), and
            # weighs work by pixels, since a coarse-scale evaluation costs a fraction of a fine one.
            since, work_then = self.first_done
            rate = (now - since) / (self.work_done - work_then)
            eta = rate * (self.total_work - self.work_done)
        return Progress(
            iteration=self.done,
            total=self.options.iterations,
            content_loss=content,
            style_loss=style,
            tv_loss=tv,
            elapsed_s=now - self.started,
            eta_s=eta,
            scale=size,
        )

    def _finish(self, image: Tensor) -> Tensor:
        """What to show: for luminance transfer, the result's luma with the content's chroma."""
        image = image.clamp(0.0, 1.0)
        if self.options.preserve_color != "luminance":
            return image
        height, width = image.shape[-2:]
        content = _resize(self.content_rgb.to(image.device), height, width)
        ycbcr = _rgb_to_ycbcr(content)
        ycbcr = torch.cat([_luma(image), ycbcr[:, 1:]], dim=1)
        return _ycbcr_to_rgb(ycbcr).clamp(0.0, 1.0)


def _mean_of(terms: Iterable[Tensor]) -> Tensor:
    """Mean of loss terms, so adding a layer does not silently raise a term's weight."""
    return torch.stack(list(terms)).mean()


# --- option handling --------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _resolve_weights(options: GatysOptions, defaults: LossWeights) -> LossWeights:
    return LossWeights(
        content=defaults.content if options.content_weight is None else options.content_weight,
        style=defaults.style if options.style_weight is None else options.style_weight,
        tv=defaults.tv if options.tv_weight is None else options.tv_weight,
    )


def _blend_weights(blend: tuple[float, ...] | None, count: int) -> list[float]:
    if blend is None:
        return [1.0 / count] * count
    if len(blend) != count:
        raise ValueError(f"style_blend has {len(blend)} weights for {count} style images")
    total = float(sum(blend))
    return [float(w) / total for w in blend]


def _split(total: int, parts: int) -> list[int]:
    """Even split; the remainder goes to the coarse scales, where evaluations are cheapest."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


@contextmanager
def _accelerator_settings(device: torch.device, *, deterministic: bool) -> Iterator[None]:
    """cuDNN autotuning and TF32 on CUDA for speed; seeded runs trade autotuning for determinism.

    These switches are process-wide, so they are restored afterwards.
    """
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    saved = (
        backends.cudnn.benchmark,
        backends.cudnn.deterministic,
        backends.cudnn.allow_tf32,
        backends.cuda.matmul.allow_tf32,
    )
    backends.cudnn.benchmark = not deterministic
    backends.cudnn.deterministic = deterministic
    backends.cudnn.allow_tf32 = True
    backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        (
            backends.cudnn.benchmark,
            backends.cudnn.deterministic,
            backends.cudnn.allow_tf32,
            backends.cuda.matmul.allow_tf32,
        ) = saved


# --- image helpers ----------------------------------------------------------------------------


def _check_image(image: np.ndarray, label: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"{label} must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{label} must have shape HxWx3, got {image.shape}")


def _to_tensor(image: np.ndarray) -> Tensor:
    """HxWx3 uint8 -> (1,3,H,W) float32 in 0..1, on the CPU."""
    return torch.tensor(image).permute(2, 0, 1)[None].float().contiguous() / 255.0


def _to_uint8(image: Tensor) -> np.ndarray:
    scaled = (image[0].detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return scaled.permute(1, 2, 0).cpu().numpy()


def _fit_long_side(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the longest side `size`; very thin images keep at least MIN_SIZE."""
    scale = size / max(height, width)
    return max(MIN_SIZE, round(height * scale)), max(MIN_SIZE, round(width * scale))


def _resize(image: Tensor, height: int, width: int) -> Tensor:
    if tuple(image.shape[-2:]) == (height, width):
        return image
    resized = F.interpolate(
        image, size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp(0.0, 1.0)


def _resize_long_side(image: Tensor, size: int) -> Tensor:
    return _resize(image, *_fit_long_side(image.shape[-2], image.shape[-1], size))


# Full-range ITU-R BT.601 (JPEG) YCbCr; chroma is centred on 0.5.
_RGB_TO_YCBCR = torch.from_numpy(RGB_TO_YCBCR)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR.double()).float()
_CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)


def _rgb_to_ycbcr(image: Tensor) -> Tensor:
    matrix = _RGB_TO_YCBCR.to(image.device)
    return torch.einsum("ij,njhw->nihw", matrix, image) + _CHROMA_OFFSET.to(image.device)


def _ycbcr_to_rgb(image: Tensor) -> Tensor:
    inverse = _YCBCR_TO_RGB.to(image.device)
    return torch.einsum("ij,njhw->nihw", inverse, image - _CHROMA_OFFSET.to(image.device))


def _luma(image: Tensor) -> Tensor:
    """(N,3,H,W) RGB -> (N,1,H,W) luma."""
    return _rgb_to_ycbcr(image)[:, :1]


def _match_moments(source: Tensor, reference: Tensor) -> Tensor:
    """Shift and scale `source` to the reference's mean and standard deviation."""
    scale = reference.std() / source.std().clamp_min(1e-6)
    return ((source - source.mean()) * scale + reference.mean()).clamp(0.0, 1.0)


def _match_colour(source: Tensor, reference: Tensor) -> Tensor:
    """Affine colour transfer: give `source` the reference's RGB mean and covariance.

    x' = C_r^(1/2) C_s^(-1/2) (x - mu_s) + mu_r, the "image analogies" variant of Gatys et al.
    (2016, "Preserving Color in Neural Artistic Style Transfer"). Symmetric square roots keep
    the mapping free of the rotation a Cholesky factor would add.
    """

    def moments(image: Tensor) -> tuple[Tensor, Tensor]:
        pixels = image[0].reshape(3, -1).double()
        mean = pixels.mean(dim=1, keepdim=True)
        centred = pixels - mean
        covariance = centred @ centred.T / max(1, pixels.shape[1] - 1)
        return mean, covariance + 1e-5 * torch.eye(3, dtype=torch.float64)

    def matrix_power(matrix: Tensor, power: float) -> Tensor:
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(1e-10).pow(power)) @ vectors.T

    source_mean, source_cov = moments(source)
    reference_mean, reference_cov = moments(reference)
    transform = matrix_power(reference_cov, 0.5) @ matrix_power(source_cov, -0.5)
    pixels = source[0].reshape(3, -1).double()
    matched = transform @ (pixels - source_mean) + reference_mean
    return matched.reshape(source.shape).float().clamp(0.0, 1.0)
