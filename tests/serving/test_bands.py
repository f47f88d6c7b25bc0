"""Band-by-band inference against the whole network, and the bands' geometry and files."""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pattern
from ml_dtypes import bfloat16

from app.nets.segments import Segment, SegmentedNetwork, deepest_run, merge, split_at_norms
from app.serving.bands import WHOLE_RUN_COST, WholeRun, bands, plan, stylize_banded
from app.serving.pixels import network_input
from app.serving.torch_backend import PixelScale
from app.weights.checkpoints import load_transformer_net
from tests.serving.test_tiling import MOSAIC


@pytest.mark.parametrize(
    ("height", "width", "budget"), [(200, 152, 152 * 60), (4, 8, 1), (97 * 4, 64, 64 * 40)]
)
def test_bands_cover_align_and_respect_the_budget(height: int, width: int, budget: int) -> None:
    result = bands(height, width, budget, reach=5)
    assert result[0].top == 0 and result[-1].bottom == height
    for before, after in itertools.pairwise(result):
        assert before.bottom == after.top
    for band in result:
        assert band.top % 4 == 0 and band.start % 4 == 0 and band.stop % 4 in (0, height % 4)
        assert band.start == max(0, band.top - 8) and band.stop == min(height, band.bottom + 8)
        if (budget // width) >= 4 + 16:
            assert (band.stop - band.start) * width <= budget


class _Torch:
    """A segment run eagerly, counting releases."""

    map_dtype = np.dtype(np.float32)

    def __init__(self, module: torch.nn.Module, log: list[str]) -> None:
        self.module = module
        self.log = log

    def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
        with torch.no_grad():
            outputs = self.module(*(torch.from_numpy(np.asarray(x)) for x in inputs))
        return [o.numpy() for o in outputs]

    def release(self) -> None:
        self.log.append("release")


@pytest.fixture(scope="module")
def mosaic_like() -> tuple[PixelScale, SegmentedNetwork]:
    module = PixelScale(load_transformer_net(MOSAIC).eval(), unit_range=False)
    return module, split_at_norms(module, (torch.rand(1, 3, 128, 128) * 255.0,))


def _whole_and_banded(
    module: PixelScale, network: SegmentedNetwork, log: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The network on a 152x200 picture whole, and in bands of 60 rows or fewer."""
    pixels = pattern(152, 200, seed=3)
    with torch.no_grad():
        whole = module(torch.from_numpy(network_input(pixels)))[0].numpy().astype(np.int16)
    calls = [_Torch(s.module, log) for s in network.segments]
    banded = stylize_banded(pixels, network, calls, [], band_pixels=152 * 60)
    return whole, banded.astype(np.int16)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR for the bands' scratch files, to see that none is left behind."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again: it is cached
    return tmp_path


def test_banded_equals_whole(
    mosaic_like: tuple[PixelScale, SegmentedNetwork], scratch: Path
) -> None:
    module, network = mosaic_like
    log: list[str] = []
    whole, banded = _whole_and_banded(module, network, log)
    assert len(bands(200, 152, 152 * 60, 5)) >= 4
    assert np.abs(banded - whole).max() <= 1
    assert log == ["release"] * len(network.segments)  # once per segment, after its last band
    assert list(scratch.iterdir()) == []  # scratch files gone


def test_margins_are_what_makes_bands_exact(
    mosaic_like: tuple[PixelScale, SegmentedNetwork],
) -> None:
    """With the measured reach cut to nothing, the bands' borders show: the margins matter."""
    module, network = mosaic_like
    blind = dataclasses.replace(
        network, segments=tuple(dataclasses.replace(s, reach=0) for s in network.segments)
    )
    whole, banded = _whole_and_banded(module, blind, [])
    assert np.abs(banded - whole).max() > 10


def test_a_failing_band_leaves_no_files(
    mosaic_like: tuple[PixelScale, SegmentedNetwork], scratch: Path
) -> None:
    _, network = mosaic_like
    calls: list[object] = [_Torch(s.module, []) for s in network.segments]

    class _Broken(_Torch):
        def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
            raise RuntimeError("out of memory")

    calls[5] = _Broken(network.segments[5].module, [])
    with pytest.raises(RuntimeError, match="out of memory"):
        stylize_banded(pattern(152, 200), network, calls, [], band_pixels=152 * 60)  # type: ignore[arg-type]
    assert list(scratch.iterdir()) == []


class _Watching(_Torch):
    """A segment run eagerly that notes the scratch files' total size before each band."""

    def __init__(self, module: torch.nn.Module, folder: Path, sizes: list[int]) -> None:
        super().__init__(module, [])
        self.folder = folder
        self.sizes = sizes

    def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
        self.sizes.append(sum(f.stat().st_size for f in self.folder.rglob("*") if f.is_file()))
        return super().run_all(*inputs)


# bf16 keeps 8 significant bits of each handed-on map: what that costs the final pixels
BF16_MEAN_LEVELS, BF16_MAX_LEVELS = 0.3, 4


class _CarriesBf16(_Watching):
    """A segment that takes and gives its handed-on maps in bf16, as OpenVINO's do."""

    map_dtype = np.dtype(bfloat16)

    def __init__(self, segment: Segment, folder: Path, sizes: list[int]) -> None:
        super().__init__(segment.module, folder, sizes)
        self.maps_out = [v.name in segment.maps_out for v in segment.outputs]

    def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
        assert all(x.dtype != np.float16 for x in inputs)
        outputs = super().run_all(*(x.astype(np.float32, copy=False) for x in inputs))
        return [
            o.astype(bfloat16) if carried else o
            for o, carried in itertools.zip_longest(outputs, self.maps_out, fillvalue=False)
        ]


def _banded_by(
    carriers: str, network: SegmentedNetwork, pixels: np.ndarray, scratch: Path
) -> tuple[np.ndarray, int]:
    """The picture in bands, each segment carrying its maps in float32 or bf16 (`mixed`:
    every other one), and the scratch files' largest total size."""
    sizes: list[int] = []
    calls = [
        _CarriesBf16(s, scratch, sizes)
        if carriers == "bf16" or (carriers == "mixed" and k % 2)
        else _Watching(s.module, scratch, sizes)
        for k, s in enumerate(network.segments)
    ]
    banded = stylize_banded(pixels, network, calls, [], band_pixels=152 * 60)
    return banded.astype(np.int16), max(sizes)


@pytest.mark.parametrize("carriers", ["bf16", "mixed"])
def test_maps_carried_in_bf16_halve_the_scratch(
    mosaic_like: tuple[PixelScale, SegmentedNetwork], scratch: Path, carriers: str
) -> None:
    """Backends that hand maps on in bf16 halve the scratch files and stay within bf16's
    rounding of the whole network; where backends are mixed (one segment fell back to
    another backend), each map is converted to what its reader takes."""
    module, network = mosaic_like
    pixels = pattern(152, 200, seed=3)
    with torch.no_grad():
        whole = module(torch.from_numpy(network_input(pixels)))[0].numpy().astype(np.int16)
    exact, float32_peak = _banded_by("float32", network, pixels, scratch)
    carried, peak = _banded_by(carriers, network, pixels, scratch)
    assert np.abs(exact - whole).max() <= 1
    assert float32_peak > 152 * 200 * 32 * 4  # at least one full-size 32-channel map
    difference = np.abs(carried - whole)
    assert difference.mean() <= BF16_MEAN_LEVELS and 1 < difference.max() <= BF16_MAX_LEVELS
    if carriers == "bf16":
        assert peak == float32_peak // 2


class _Shapes(_Torch):
    """A segment run eagerly that notes the rows of the first map it is given, per band."""

    def __init__(self, module: torch.nn.Module, rows: list[int]) -> None:
        super().__init__(module, [])
        self.rows = rows

    def run_all(self, *inputs: np.ndarray) -> Sequence[np.ndarray]:
        self.rows.append(next(x.shape[2] for x in inputs if x.ndim == 4))
        return super().run_all(*inputs)


def test_each_segment_runs_its_largest_band_first(
    mosaic_like: tuple[PixelScale, SegmentedNetwork],
) -> None:
    """A backend sizes its buffers on the first band; smaller bands after it reuse them."""
    module, network = mosaic_like
    rows: list[list[int]] = [[] for _ in network.segments]
    calls = [_Shapes(s.module, r) for s, r in zip(network.segments, rows, strict=True)]
    banded = stylize_banded(pattern(152, 200, seed=3), network, calls, [], band_pixels=152 * 60)
    whole, _ = _whole_and_banded(module, network, [])
    assert np.abs(banded.astype(np.int16) - whole).max() <= 1
    for seen in rows:
        assert len(seen) >= 4 and seen[0] == max(seen) and len(set(seen)) > 1


def _merged(network: SegmentedNetwork) -> WholeRun:
    first, last = deepest_run(network) or (0, 0)
    segment = merge(network, first, last)
    return WholeRun(first, last, segment, _Shapes(segment.module, []))


def test_a_whole_run_replaces_its_segments_where_it_fits(
    mosaic_like: tuple[PixelScale, SegmentedNetwork],
) -> None:
    """TransformerNet's stack holds 8 values per pixel (128 channels at a quarter of the
    side), its widest map 32 (the first convolution's): at WHOLE_RUN_COST times the bytes per
    value, the stack runs whole up to 1.6 times the largest image that runs untiled, and in
    bands above."""
    _, network = mosaic_like
    calls = [_Torch(s.module, []) for s in network.segments]
    whole = _merged(network)
    largest = 1000
    fits = int(largest * 32 / (8 * WHOLE_RUN_COST))
    chosen, runs = plan(network, calls, whole, fits, largest)
    assert len(chosen.segments) == len(network.segments) - 9 and whole.call in runs
    assert chosen.segments[whole.first] is whole.segment
    chosen, runs = plan(network, calls, whole, fits + 4, largest)
    assert chosen == network and runs == calls
    assert plan(network, calls, None, 4, largest) == (network, calls)


def test_a_whole_run_runs_once_and_keeps_the_result(
    mosaic_like: tuple[PixelScale, SegmentedNetwork],
) -> None:
    """The merged stack runs in one piece, the whole image, among segments run in bands;
    the picture is still the network's."""
    module, network = mosaic_like
    whole = _merged(network)
    rows: list[list[int]] = [[] for _ in network.segments]
    calls = [_Shapes(s.module, r) for s, r in zip(network.segments, rows, strict=True)]
    chosen, runs = plan(network, calls, whole, 152 * 200, 152 * 200)
    banded = stylize_banded(pattern(152, 200, seed=3), chosen, runs, [], band_pixels=152 * 60)
    reference, _ = _whole_and_banded(module, network, [])
    assert np.abs(banded.astype(np.int16) - reference).max() <= 1
    assert whole.call.rows == [200 // 4]  # type: ignore[attr-defined]
    assert all(len(seen) >= 4 for seen in rows[: whole.first] + rows[whole.last + 1 :])
    assert all(seen == [] for seen in rows[whole.first : whole.last + 1])
