"""The Gatys objective and its gradient, evaluated tile by tile at print size.

A backbone's activations with gradients cost kilobytes per pixel, so a whole print-size image
cannot go through it at once. The content term is local and splits over tiles, but the style
terms compare Gram matrices, which are sums over every position of the image. A sum splits
too: a first pass over the tiles (no gradients) adds up each layer's Gram matrix and the
content error, which gives the objective. Once the Gram matrices are known, the derivative of
the style terms with respect to each whole Gram matrix is a constant matrix; a second pass runs
each tile again with gradients against the surrogate <that matrix, the tile's share of the
Gram>, whose gradient is the objective's. Each tile carries margins as deep as the backbone's
reach, cut away from its features, and starts on a multiple of the deepest tap's stride, so
every position's features, and the gradient flowing back through them, are exactly the whole
image's: nothing to blend, no seam.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from app.core.progress import stop_if_asked
from app.perceptual.backbones import Backbone, LossWeights
from app.perceptual.losses import content_energy, gram_matrix, style_loss, total_variation_loss

_PROBE_LENGTH = 1024  # pixels along the axis the probe that measures a backbone's reach cuts
_PROBE_BREADTH = 32


@dataclass(frozen=True)
class Span:
    """Positions [start, stop) of the result along one axis, computed from input [low, high)."""

    start: int
    stop: int
    low: int
    high: int

    def local(self) -> Span:
        """The same span counted from the start of the tile's input."""
        return Span(self.start - self.low, self.stop - self.low, 0, self.high - self.low)


@dataclass(frozen=True)
class Tile:
    """A rectangle of the result: its rows and its columns, each with its margins."""

    rows: Span
    cols: Span

    def of(self, image: Tensor) -> Tensor:
        """The tile's input pixels (margins included)."""
        return image[:, :, self.rows.low : self.rows.high, self.cols.low : self.cols.high]


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut: borders on multiples of `stride`, `reach` pixels of margin on
    every side, result tiles of `side` pixels square; `scales` gives each tap's downsampling."""

    stride: int
    reach: int
    side: int
    scales: Mapping[str, int]

    def tiles(self, height: int, width: int) -> list[list[Tile]]:
        """Rows of tiles, top to bottom, each left to right."""
        columns = self._spans(width)
        return [[Tile(rows, cols) for cols in columns] for rows in self._spans(height)]

    def _spans(self, length: int) -> list[Span]:
        return [
            Span(
                start,
                min(start + self.side, length),
                max(0, start - self.reach),
                min(length, start + self.side + self.reach),
            )
            for start in range(0, length, self.side)
        ]


@dataclass(frozen=True)
class Reach:
    """A backbone's downsampling at each tap, and how many input pixels away from a tap's
    position can change it (rounded up to the deepest tap's stride)."""

    scales: Mapping[str, int]
    pixels: int

    @property
    def stride(self) -> int:
        return max(self.scales.values())

    def plan(self, tile_pixels: int) -> TilePlan:
        """Tiles of at most about `tile_pixels` input pixels each, margins included, and at
        least one stride of result."""
        side = (int(tile_pixels**0.5) - 2 * self.pixels) // self.stride * self.stride
        return TilePlan(self.stride, self.pixels, max(self.stride, side), self.scales)


def measure_reach(backbone: Backbone, layers: Sequence[str]) -> Reach:
    """Measure on the backbone itself: change a random probe on one side of its middle, then
    on the other, along each axis, and see which positions of each tap move. Raises ValueError
    for a backbone whose features do not stay local (global pooling, attention), which cannot
    run in tiles."""
    generator = torch.Generator().manual_seed(0)
    middle = _PROBE_LENGTH // 2
    scales: dict[str, int] = {}
    reach = 0
    with torch.no_grad():
        for axis in (2, 3):
            shape = [1, 3, _PROBE_BREADTH, _PROBE_BREADTH]
            shape[axis] = _PROBE_LENGTH
            probe = torch.rand(shape, generator=generator)
            reference = backbone(probe.to(backbone.device), layers)
            for name in layers:
                scales[name] = _PROBE_LENGTH // reference[name].shape[axis]
            for after in (True, False):
                changed = probe.clone()
                part = changed.narrow(axis, middle if after else 0, middle)
                part.copy_(torch.rand(part.shape, generator=generator))
                result = backbone(changed.to(backbone.device), layers)
                for name in layers:
                    moved = (reference[name] != result[name]).movedim(axis, 0).flatten(1).any(1)
                    index = torch.nonzero(moved).flatten()
                    if len(index) == 0:
                        continue
                    scale = scales[name]
                    edge = int(index.min()) * scale if after else (int(index.max()) + 1) * scale
                    reach = max(reach, abs(middle - edge))
    stride = max(scales.values())
    if reach >= middle - stride:
        raise ValueError(f"{backbone.name} features are not local; it cannot run in tiles")
    return Reach(scales, -(-reach // stride) * stride)


def tile_features(
    backbone: Backbone,
    image: Tensor,
    tile: Tile,
    layers: Sequence[str],
    plan: TilePlan,
    bf16: bool = False,
) -> dict[str, Tensor]:
    """The features of the tile's result positions, in fp32: the tile's input through the
    backbone, its margins cut away from every tap."""
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bf16):
        features = backbone(tile.of(image), layers)
    core: dict[str, Tensor] = {}
    for name in layers:
        scale, value = plan.scales[name], features[name]
        top, bottom = _cut(tile.rows, scale, value.shape[2])
        left, right = _cut(tile.cols, scale, value.shape[3])
        core[name] = value[:, :, top:bottom, left:right].float()
    return core


def tiled_targets(
    backbone: Backbone, content: Tensor, layers: Sequence[str], plan: TilePlan
) -> dict[str, Tensor]:
    """The content image's whole feature maps (fp32, as targets are), assembled from tiles."""
    rows: dict[str, list[Tensor]] = {name: [] for name in layers}
    with torch.no_grad():
        for row in plan.tiles(*content.shape[2:]):
            cores = [tile_features(backbone, content, tile, layers, plan) for tile in row]
            for name in layers:
                rows[name].append(torch.cat([core[name] for core in cores], dim=3))
    return {name: torch.cat(pieces, dim=2) for name, pieces in rows.items()}


def tiled_grams(
    backbone: Backbone, image: Tensor, layers: Sequence[str], plan: TilePlan
) -> dict[str, Tensor]:
    """Each layer's Gram matrix of the whole image (as `gram_matrix` gives it), from tiles."""
    grams = _GramSums(layers)
    with torch.no_grad():
        for tile in _flat(plan, image):
            grams.add(tile_features(backbone, image, tile, layers, plan))
    return grams.whole()


def tiled_objective(
    image: Tensor,
    backbone: Backbone,
    content_targets: Mapping[str, Tensor],
    style_targets: Mapping[str, Tensor],
    weights: LossWeights,
    plan: TilePlan,
    bf16: bool = False,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The weighted content, style and TV terms of `optimize`'s objective; its gradient is
    written to `image.grad`. Two passes over the tiles: the first sums the Gram matrices and
    content errors, the second backpropagates each tile's share."""
    content_layers, style_layers = list(content_targets), list(style_targets)
    layers = list(dict.fromkeys(content_layers + style_layers))
    tiles = _flat(plan, image)
    pixels = image.detach()
    # content_loss is a layer's squared error over its element count and its target's energy.
    per_error = {
        name: 1.0 / (target.numel() * content_energy(target))
        for name, target in content_targets.items()
    }

    grams = _GramSums(style_layers)
    errors = dict.fromkeys(content_layers, torch.zeros((), device=image.device))
    with torch.no_grad():
        for tile in tiles:
            stop_if_asked(should_cancel)
            core = tile_features(backbone, pixels, tile, layers, plan, bf16)
            grams.add(core)
            for name in content_layers:
                errors[name] = errors[name] + _content_error(
                    core, content_targets, tile, plan, name
                )

    whole = {name: gram.requires_grad_(True) for name, gram in grams.whole().items()}
    style = weights.style * _mean([style_loss(whole[n], style_targets[n]) for n in style_layers])
    slopes = dict(zip(style_layers, torch.autograd.grad(style, list(whole.values())), strict=True))
    content = weights.content * _mean([errors[n] * per_error[n] for n in content_layers])

    gradient = torch.zeros_like(pixels)
    for tile in tiles:
        stop_if_asked(should_cancel)
        piece = tile.of(pixels).clone().requires_grad_(True)
        local = Tile(tile.rows.local(), tile.cols.local())
        core = tile_features(backbone, piece, local, layers, plan, bf16)
        share = torch.zeros((), device=image.device)
        for name in style_layers:
            if _positions(core[name]):
                # The whole Gram is the positions-weighted mean of the tiles' Grams.
                weight = _positions(core[name]) / grams.positions[name]
                share = share + (slopes[name] * gram_matrix(core[name])).sum() * weight
        for name in content_layers:
            error = _content_error(core, content_targets, tile, plan, name)
            share = share + weights.content * error * per_error[name] / len(content_layers)
        if share.requires_grad:
            share.backward()
            assert piece.grad is not None
            tile.of(gradient).add_(piece.grad)

    with torch.enable_grad():
        free = pixels.clone().requires_grad_(True)
        tv = weights.tv * total_variation_loss(free)
        (tv_gradient,) = torch.autograd.grad(tv, free)
    image.grad = gradient + tv_gradient
    return content.detach(), style.detach(), tv.detach()


class _GramSums:
    """Unnormalised Gram matrices and position counts, added up tile by tile."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.sums: dict[str, Tensor] = {}
        self.positions = dict.fromkeys(self.layers, 0)

    def add(self, core: Mapping[str, Tensor]) -> None:
        for name in self.layers:
            positions = _positions(core[name])
            if positions == 0:  # a last, thin tile can hold no position of a deep tap
                continue
            share = gram_matrix(core[name]) * positions
            self.sums[name] = self.sums[name] + share if name in self.sums else share
            self.positions[name] += positions

    def whole(self) -> dict[str, Tensor]:
        return {name: self.sums[name] / self.positions[name] for name in self.layers}


def _cut(span: Span, scale: int, size: int) -> tuple[int, int]:
    """The positions of a tap, `size` long over the span's input, that are the span's result."""
    return (span.start - span.low) // scale, size - (span.high - span.stop) // scale


def _content_error(
    core: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    tile: Tile,
    plan: TilePlan,
    name: str,
) -> Tensor:
    """Sum of squared feature errors over the tile's result positions of one content layer."""
    scale, value = plan.scales[name], core[name]
    top, left = tile.rows.start // scale, tile.cols.start // scale
    target = targets[name][:, :, top : top + value.shape[2], left : left + value.shape[3]]
    return (value - target).pow(2).sum()


def _flat(plan: TilePlan, image: Tensor) -> list[Tile]:
    return [tile for row in plan.tiles(*image.shape[2:]) for tile in row]


def _positions(features: Tensor) -> int:
    return int(features.shape[2] * features.shape[3])


def _mean(terms: list[Tensor]) -> Tensor:
    return torch.stack(terms).mean()
