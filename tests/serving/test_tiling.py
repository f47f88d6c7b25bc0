"""Tiled inference against the untiled network, the independent reference, on every backend.

Images are built in code and tiles are small (256 px): `downscaled` cuts each image in four
tiles with both a horizontal and a vertical seam, `exact` in two bands of rows. The goal of
issue 19 is the threshold: a mean difference of at most one level (of 255) from the untiled
output, and no seam (the same bound along the tile and band borders as everywhere).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pattern

from app.core.cpu_features import has_fast_bf16
from app.nets.multistyle import NUM_STYLES
from app.nets.norm_stats import (
    CollectAllStats,
    PlannedInstanceNorm2d,
    RecordStats,
    probe_layout,
)
from app.serving.bands import bands, plan
from app.serving.pixels import network_input
from app.serving.runner import StyleRunner
from app.serving.tiling import (
    TileOptions,
    axis_tiles,
    axis_weights,
    downscaled_stats,
    owned_mask,
    render_tiles,
)
from app.styles.catalog import MultiStyleBlend, SingleStyle, StyleChoice, StyleVector
from tests.nets.test_transformer_net import transformer_style

CPU = torch.device("cpu")
MOSAIC = Path(__file__).resolve().parents[2] / "models" / "mosaic-atelier.safetensors"
GOAL_LEVELS = 1.0  # mean absolute difference to the untiled output, on 0..255
TILES = TileOptions(tile_size=256)
SEAM_BAND = 16  # pixels either side of a tile border checked on their own


@pytest.mark.parametrize("size", [16, 256, 260, 300, 352, 612, 1000, 2052])
def test_axis_tiles_cover_align_and_blend_to_one(size: int) -> None:
    context, blend = TILES.context, TILES.blend
    axis = axis_tiles(size, TILES.tile_size, context, blend)
    assert axis.starts[0] == 0 and axis.starts[-1] + axis.length == size
    assert all(start % 4 == 0 for start in axis.starts)
    assert axis.length <= min(size, TILES.tile_size) and axis.length % 4 == 0
    for before, after in zip(axis.starts, axis.starts[1:], strict=False):
        assert before + axis.length - after >= 2 * context + blend
    total = np.zeros(size)
    owners = np.zeros(size)
    for index, start in enumerate(axis.starts):
        weight = axis_weights(axis, index, blend)
        total[start : start + axis.length] += weight
        owners[start : start + axis.length] += owned_mask(axis, index)
        # a tile's weight lies inside its trusted part (beyond its context) or at the image edge
        inner = np.nonzero(weight)[0]
        assert index == 0 or inner[0] >= context
        assert index == len(axis.starts) - 1 or inner[-1] < axis.length - context
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    np.testing.assert_array_equal(owners, 1.0)


BACKENDS = {
    "onnxruntime-fp32": {},
    "torch": {"cpu_backend": "torch"},
    "openvino-bf16": {"cpu_precision": "bf16"},
}


@pytest.fixture(scope="module")
def runners(cache_dir: Path) -> Iterator[dict[str, StyleRunner]]:
    """Runners by backend, each built when a test first asks for it (a fixture building all
    three at once would charge their exports to the first test's time limit)."""
    yield _LazyRunners(cache_dir)


class _LazyRunners(dict[str, StyleRunner]):
    def __init__(self, cache_dir: Path) -> None:
        super().__init__()
        self.cache_dir = cache_dir

    def __missing__(self, backend: str) -> StyleRunner:
        runner = StyleRunner(CPU, self.cache_dir, tiles=TILES, **BACKENDS[backend])
        runner.load_transformer(transformer_style(MOSAIC))
        self[backend] = runner
        return runner


def _choice(runner: StyleRunner, network: str) -> StyleChoice:
    if network == "transformer":
        return SingleStyle(transformer_style(MOSAIC))
    if network == "multistyle":
        weights = torch.zeros(NUM_STYLES)
        weights[[3, 19]] = torch.tensor([0.7, 0.3])
        return MultiStyleBlend(weights)
    return StyleVector(runner.style_vector(pattern(128, 128, seed=9)))


def _untiled(runner: StyleRunner, pixels: np.ndarray, choice: StyleChoice) -> np.ndarray:
    tiles = runner.tiles
    runner.tiles = dataclasses.replace(tiles, tile_size=4096)
    try:
        return runner.stylize(pixels, choice)
    finally:
        runner.tiles = tiles


def _seam_bands(height: int, width: int) -> np.ndarray:
    """True within SEAM_BAND px of every inner tile border and band border."""
    band = np.zeros((height, width), dtype=bool)
    for reach in (4, 8, 12, 16):
        for piece in bands(height, width, TILES.tile_size**2, reach)[1:]:
            band[piece.top - SEAM_BAND : piece.top + SEAM_BAND] = True
    for axis_len, is_rows in ((height, True), (width, False)):
        bounds = axis_tiles(axis_len, TILES.tile_size, TILES.context, TILES.blend).bounds
        for bound in bounds[1:-1]:
            if is_rows:
                band[bound - SEAM_BAND : bound + SEAM_BAND] = True
            else:
                band[:, bound - SEAM_BAND : bound + SEAM_BAND] = True
    return band


# The first tiled image of each network exports its segments (13-18 graphs).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("whole_stack", [True, False], ids=["stack-whole", "all-bands"])
@pytest.mark.parametrize("network", ["transformer", "multistyle", "arbitrary"])
@pytest.mark.parametrize("backend", ["onnxruntime-fp32", "torch", "openvino-bf16"])
def test_tiled_matches_untiled(
    runners: dict[str, StyleRunner],
    backend: str,
    network: str,
    whole_stack: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tiled against untiled on the same backend, with the residual stack run whole (at this
    size it fits) and with every segment in bands. bf16 is the exception: untiled bf16 is
    itself about one level from fp32 (its own rounding, which tiles realise differently), so
    there the reference is untiled fp32 and tiles may differ from it by that much, no more."""
    if backend == "openvino-bf16" and not has_fast_bf16():
        pytest.skip("this CPU has no fast bf16: OpenVINO bf16 is not used")
    runner = runners[backend]
    monkeypatch.setattr(runner, "tiles", dataclasses.replace(TILES, whole_stack=whole_stack))
    pixels = pattern(264, 262, seed=4)  # padded to 264x264: four tiles, odd height
    assert TILES.needs_tiles(264, 264)
    choice = _choice(runner, network)
    bound = GOAL_LEVELS
    if backend == "openvino-bf16":
        fp32 = runners["onnxruntime-fp32"]
        reference = _untiled(fp32, pixels, _choice(fp32, network)).astype(np.int16)
        own = np.abs(_untiled(runner, pixels, choice).astype(np.int16) - reference).mean()
        # bf16 rounds each tile's sums in its own order, so its error is realised afresh:
        # comparable to untiled bf16's (a quarter more at most), not larger in kind.
        bound = max(GOAL_LEVELS, 1.25 * own)
    else:
        reference = _untiled(runner, pixels, choice).astype(np.int16)
    tiled = runner.stylize(pixels, choice).astype(np.int16)
    built = runner._segmented[runner._pixels_for(choice)[0]]
    assert built.whole is not None
    chosen, _ = plan(built.network, built.calls, built.whole, 264 * 264, TILES.tile_size**2)
    assert built.whole.segment in chosen.segments  # so the stack-whole case runs it
    assert tiled.shape == reference.shape == (262, 264, 3)
    difference = np.abs(tiled - reference)
    band = _seam_bands(264, 264)[:262]
    assert difference.mean() <= bound
    assert difference[band].mean() <= bound
    # and the output is a stylization, not the photo or a flat image
    assert np.abs(reference - pixels).mean() > 10 and reference.std() > 10


def test_small_images_take_the_untiled_path(
    runners: dict[str, StyleRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = runners["torch"]
    tiled: list[tuple[int, ...]] = []
    monkeypatch.setattr(runner, "_stylize_tiled", lambda frames, _: tiled.append(frames.shape))
    runner.stylize(pattern(256, 250), _choice(runner, "multistyle"))
    assert tiled == []
    with pytest.raises(TypeError):  # the stub returns None: the tiled path was taken
        runner.stylize(pattern(260, 256), _choice(runner, "multistyle"))
    assert tiled == [(1, 256, 260, 3)]


def test_tiles_blend_without_seams_whatever_the_statistics(
    runners: dict[str, StyleRunner],
) -> None:
    """With the same statistics injected, tiles composite to the whole image run with them:
    the geometry (context, alignment, blend) adds nothing, whichever statistics are used."""
    runner = runners["torch"]
    choice = _choice(runner, "multistyle")
    tiles = runner.tiles
    runner.tiles = dataclasses.replace(tiles, stats="downscaled")
    try:
        runner._stylize_tiled(pattern(264, 264)[None], choice)  # builds the tile networks
    finally:
        runner.tiles = tiles
    networks = runner._stats_networks["multistyle"]
    _, condition = runner._network_for(choice, 1)
    pixels = pattern(264, 264, seed=2)
    mean, var = downscaled_stats(pixels, networks, condition, 5000)
    whole = networks.inject(
        network_input(pixels), *condition, mean.astype(np.float32), var.astype(np.float32)
    )[0]
    rows = axis_tiles(264, TILES.tile_size, TILES.context, TILES.blend)
    tiled = render_tiles(pixels, networks, condition, mean, var, rows, rows, TILES.blend)
    difference = np.abs(tiled.astype(np.int16) - whole)
    assert difference.mean() < 0.05 and difference.max() <= 2


def test_tiles_hold_no_full_size_float_copy(cache_dir: Path) -> None:
    """Working memory on the Python side: uint8 canvas, float only per tile. The whole image
    as float32 (what the untiled path feeds the network) must never be allocated."""
    import tracemalloc

    runner = StyleRunner(
        CPU, cache_dir, tiles=TileOptions(tile_size=384, stats="downscaled", stats_pixels=20_000)
    )
    choice = _choice(runner, "multistyle")
    pixels = pattern(1200, 880, seed=5)
    runner.stylize(pattern(400, 400), choice)  # builds the tile networks outside the trace
    full_float = pixels.size * 4
    tracemalloc.start()
    try:
        out = runner.stylize(pixels, choice)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == pixels.shape
    assert peak < full_float, f"peak {peak / 2**20:.1f} MiB >= one float32 copy"


class _Tiny(torch.nn.Module):
    """Conv, instance norm, residual, conv: a network small enough to reason about."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.norm1 = PlannedInstanceNorm2d(16, affine=True)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.norm2 = PlannedInstanceNorm2d(16, affine=True)
        self.conv3 = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x / 255.0)))
        y = y + torch.relu(self.norm2(self.conv2(y)))
        out = torch.sigmoid(self.conv3(y)) * 255.0
        return torch.floor(out + 0.5).to(torch.uint8).permute(0, 2, 3, 1)


def test_refinement_pass_keeps_exact_statistics() -> None:
    """The collect-all pass (refinement, bench/tile_refine_convergence.py) with the whole
    image's own statistics injected gives them back: they are its fixed point."""
    module = _Tiny().eval()
    pixels = network_input(pattern(64, 64, seed=3))
    x = torch.from_numpy(pixels)
    layout = probe_layout(lambda t: module(t * 255.0))
    with torch.no_grad():
        own = RecordStats(module)(x)
        ones = torch.ones(64)
        shift, s1, s2 = CollectAllStats(module, layout)(x, own[0], own[1], ones, ones).double()
    count = 64 * 64
    np.testing.assert_allclose(shift + s1 / count, own[0].double(), atol=1e-5)
    np.testing.assert_allclose(s2 / count - (s1 / count) ** 2, own[1].double(), rtol=1e-4)
