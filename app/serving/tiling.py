"""Print-size options, and the `downscaled` mode: overlapping tiles with injected statistics.

The style networks are fully convolutional, so a tile with enough context around it computes
the same pixels as the whole image would, with one exception: instance norm, which normalises
with the statistics of the whole feature map. `TileOptions.stats` says where the statistics
come from:

- `exact` (the default): the whole image's, layer by layer; that mode runs the network's
  segments band by band (`app.serving.bands`), not here;
- `downscaled`: the statistics of a copy downscaled to at most `stats_pixels`, in one small
  pass (`app.nets.norm_stats` injects them into every tile). Seamless too, but these networks
  respond to scale (a downscaled copy has other textures) and to small changes of their
  statistics, so the colours and contrast drift from the whole-image result
  (docs/print-size.md has the measurements).

The render pass runs the tiles with the statistics injected and cosine-blends them across
their overlaps into a uint8 canvas: no full-size float copy ever exists. `combine_moments`
(per-part sums to whole-image moments) is shared with the bands.

Tiles start on multiples of 4, so each tile's strided layers sample the same grid as the whole
image; all tiles of one image have one shape, so compiled backends see one input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.core.config import StatsMethod
from app.nets.norm_stats import NormLayout
from app.serving.cpu_precision import Precision
from app.serving.pixels import SIDE_MULTIPLE, network_input, pad_for_network

# ATELIER_TILE_SIZE when unset, by the precision the networks compute in: fp32 activations take
# twice the bytes of bf16 ones, so fp32 backends run whole and in bands half as many pixels
# (1448^2 is about 2048^2 / 2) for about the same working memory.
DEFAULT_TILE_SIZE: dict[Precision, int] = {"bf16": 2048, "fp32": 1448}
# A network call: numpy inputs (image, conditions, stats...) in, one numpy array out.
Call = Callable[..., np.ndarray]
# Rows per slice when compositing a tile into the canvas: bounds the float temporaries.
_COMPOSITE_ROWS = 256


@dataclass(frozen=True)
class TileOptions:
    """`tile_size`: side of a tile, context included; images with more pixels than
    tile_size^2 are tiled. `context`: pixels each tile sees beyond the part it is trusted for
    (the networks' receptive field radius is about 60 px). `blend`: width of the cosine ramp
    between neighbours. `stats_pixels`: size of the downscaled copy for the first statistics
    estimate (`downscaled` statistics only). `stats`: see the module docstring.
    `whole_stack`: `exact` runs the residual stack whole where it fits (`bands.plan`)."""

    tile_size: int = 2048
    context: int = 64
    blend: int = 32
    stats: StatsMethod = "exact"
    stats_pixels: int = 1_000_000
    whole_stack: bool = True

    def __post_init__(self) -> None:
        if self.tile_size % SIDE_MULTIPLE:
            raise ValueError(f"tile_size must be a multiple of {SIDE_MULTIPLE}")
        # Neighbouring blend ramps must not overlap inside a tile: the stride between tiles
        # (at least half the largest one, after spreading and rounding) exceeds the blend.
        smallest = 2 * self.context + 3 * self.blend + 3 * SIDE_MULTIPLE
        if self.tile_size < smallest:
            raise ValueError(f"tile_size must be at least {smallest} for this context and blend")

    def needs_tiles(self, height: int, width: int) -> bool:
        return height * width > self.tile_size * self.tile_size

    @property
    def band_pixels(self) -> int:
        """Pixels of one band for `exact` statistics, margins included: a quarter of the
        largest image that runs whole, because a segment's graph holds its input and output
        maps whole and sums its output once more for the next norm, where the whole network
        reuses its activations' memory in place: per pixel a band needs about four times as
        much."""
        return self.tile_size * self.tile_size // 4


@dataclass(frozen=True)
class StatsNetworks:
    """The two forms of one network that `downscaled` tiling runs (`app.nets.norm_stats`)."""

    record: Call  # (x, *condition) -> (2, C): own mean, var
    inject: Call  # (x, *condition, mean, var) -> (1, h, w, 3) uint8
    layout: NormLayout


@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis: starts, the shared length, and the owned-region boundaries
    (tile i owns [bounds[i], bounds[i + 1]); blends are centred on the inner bounds)."""

    starts: tuple[int, ...]
    length: int
    bounds: tuple[int, ...]


def axis_tiles(size: int, tile: int, context: int, blend: int) -> AxisTiles:
    """The fewest equal tiles of at most `tile` covering [0, size), starting on multiples of 4,
    each neighbour pair overlapping by at least 2 * context + blend so the blend lies in
    trusted pixels; the length is shrunk to what that count needs, so overlaps stay minimal."""
    if size <= tile:
        return AxisTiles((0,), size, (0, size))
    overlap = 2 * context + blend + SIDE_MULTIPLE
    count = 1 + math.ceil((size - tile) / (tile - overlap))
    needed = -(-(size + (count - 1) * overlap) // count)  # ceil: equal share plus overlaps
    length = min(tile, -(-needed // SIDE_MULTIPLE) * SIDE_MULTIPLE)
    span = size - length
    starts = [(i * span // (count - 1)) // SIDE_MULTIPLE * SIDE_MULTIPLE for i in range(count)]
    starts[-1] = span
    inner = [(starts[i] + starts[i - 1] + length) // 2 for i in range(1, count)]
    return AxisTiles(tuple(starts), length, (0, *inner, size))


def axis_weights(axis: AxisTiles, index: int, blend: int) -> np.ndarray:
    """Tile `index`'s blend weight at each of its pixels: 1 inside, cosine ramps centred on
    its inner bounds; the weights of all tiles sum to 1 at every position."""
    start = axis.starts[index]
    position = np.arange(start, start + axis.length, dtype=np.float64) + 0.5
    weight = np.ones(axis.length)
    if index > 0:
        weight *= _ramp(position - axis.bounds[index], blend)
    if index < len(axis.starts) - 1:
        weight *= 1.0 - _ramp(position - axis.bounds[index + 1], blend)
    return weight


def _ramp(offset: np.ndarray, blend: int) -> np.ndarray:
    """0 before -blend/2, 1 after +blend/2, half a cosine between."""
    t = np.clip(offset / blend + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def owned_mask(axis: AxisTiles, index: int) -> np.ndarray:
    """1 where tile `index` owns the position (for statistics: each pixel counted once)."""
    start = axis.starts[index]
    position = np.arange(start, start + axis.length)
    inside = (position >= axis.bounds[index]) & (position < axis.bounds[index + 1])
    return inside.astype(np.float32)


def _tiles(rows: AxisTiles, cols: AxisTiles) -> Iterator[tuple[int, int]]:
    for i in range(len(rows.starts)):
        for j in range(len(cols.starts)):
            yield i, j


def downscaled_stats(
    image: np.ndarray, networks: StatsNetworks, condition: list[np.ndarray], pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer mean and variance of an antialiased copy of at most `pixels` pixels."""
    height, width = image.shape[:2]
    scale = min(1.0, math.sqrt(pixels / (height * width)))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    stats = networks.record(network_input(pad_for_network(small[None])[0]), *condition)
    return stats[0].astype(np.float64), stats[1].astype(np.float64)


def combine_moments(
    parts: Sequence[tuple[float, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image channel mean and variance from per-tile (count, own mean m, sum of x - m,
    sum of (x - m)^2), in float64: the parallel-variance formula, so no float32 sum ever spans
    the whole image."""
    total = sum(p[0] for p in parts)
    mean = sum(n * m + s1 for n, m, s1, _ in parts) / total
    second = sum(s2 + 2.0 * (m - mean) * s1 + n * (m - mean) ** 2 for n, m, s1, s2 in parts)
    return mean, np.maximum(second / total, 0.0)


def tile_crop(image: np.ndarray, rows: AxisTiles, cols: AxisTiles, i: int, j: int) -> np.ndarray:
    top, left = rows.starts[i], cols.starts[j]
    return image[top : top + rows.length, left : left + cols.length]


def render_tiles(
    image: np.ndarray,
    networks: StatsNetworks,
    condition: list[np.ndarray],
    mean: np.ndarray,
    var: np.ndarray,
    rows: AxisTiles,
    cols: AxisTiles,
    blend: int,
) -> np.ndarray:
    """Every tile with the statistics injected, composited in raster order into uint8.

    Compositing "over" with alpha = weight / (weight of all tiles so far) gives the weighted
    mean of all tiles at each pixel without a float canvas: the weights are separable and sum
    to 1 per axis, so the weight already laid down is known from 1-D sums.
    """
    canvas = np.empty_like(image)
    mean32, var32 = mean.astype(np.float32), var.astype(np.float32)
    row_before = np.zeros(image.shape[0])
    for i in range(len(rows.starts)):
        wy = axis_weights(rows, i, blend)
        top = rows.starts[i]
        col_before = np.zeros(image.shape[1])
        for j in range(len(cols.starts)):
            wx = axis_weights(cols, j, blend)
            left = cols.starts[j]
            tile = networks.inject(
                network_input(tile_crop(image, rows, cols, i, j)), *condition, mean32, var32
            )[0]
            yb = row_before[top : top + rows.length]
            xb = col_before[left : left + cols.length]
            composite(canvas, tile, top, left, wy, wx, yb, xb)
            col_before[left : left + cols.length] += wx
        row_before[top : top + rows.length] += wy
    return canvas


def composite(
    canvas: np.ndarray,
    tile: np.ndarray,
    top: int,
    left: int,
    wy: np.ndarray,
    wx: np.ndarray,
    y_before: np.ndarray,
    x_before: np.ndarray,
) -> None:
    """canvas = canvas * (1 - alpha) + tile * alpha over the tile's area, in row slices."""
    height, width = tile.shape[:2]
    for r0 in range(0, height, _COMPOSITE_ROWS):
        r1 = min(height, r0 + _COMPOSITE_ROWS)
        own = wy[r0:r1, None] * wx[None, :]
        total = y_before[r0:r1, None] + wy[r0:r1, None] * (x_before[None, :] + wx[None, :])
        alpha = np.divide(own, total, out=np.ones_like(own), where=total > 0)
        target = canvas[top + r0 : top + r1, left : left + width]
        if np.all(alpha == 1.0):
            target[...] = tile[r0:r1]
            continue
        a = alpha.astype(np.float32)[..., None]
        mixed = target.astype(np.float32) * (1.0 - a) + tile[r0:r1].astype(np.float32) * a
        target[...] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def stylize_tiled(
    image: np.ndarray,
    networks: StatsNetworks,
    condition: list[np.ndarray],
    options: TileOptions,
) -> np.ndarray:
    """Stylize an HxWx3 uint8 image (sides multiples of 4) tile by tile; same size out."""
    height, width = image.shape[:2]
    rows = axis_tiles(height, options.tile_size, options.context, options.blend)
    cols = axis_tiles(width, options.tile_size, options.context, options.blend)
    if options.stats != "downscaled":
        raise ValueError("exact statistics run band by band (app.serving.bands)")
    mean, var = downscaled_stats(image, networks, condition, options.stats_pixels)
    return render_tiles(image, networks, condition, mean, var, rows, cols, options.blend)
