"""OpenVINO segments against eager torch: handed-on maps travel in bf16, the rest in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pattern
from ml_dtypes import bfloat16

from app.nets.segments import MEAN, ROWS, VAR, Segment, SegmentedNetwork
from app.serving.bands import SegmentBackend, WholeRun, stylize_banded
from app.serving.onnx_backend import OnnxModule
from app.serving.openvino_backend import OpenVinoSegment
from app.serving.runner import StyleRunner
from app.styles.catalog import SingleStyle
from tests.nets.test_transformer_net import transformer_style
from tests.serving.test_tiling import MOSAIC


def _mosaic_segments(cache_dir: Path) -> tuple[SegmentedNetwork, list[SegmentBackend], WholeRun]:
    runner = StyleRunner(torch.device("cpu"), cache_dir, cpu_precision="bf16")
    style = transformer_style(MOSAIC)
    runner.load_transformer(style)
    _, pixels = runner._pixels_for(SingleStyle(style))
    network, calls, whole = runner._build_segments(pixels)
    assert whole is not None
    return network, calls, whole


def _feeds(segment: Segment, rows: int, cols: int, seed: int) -> list[np.ndarray]:
    """Random inputs for a segment whose maps are all at a quarter of the image's side."""
    generator = torch.Generator().manual_seed(seed)
    feeds: list[np.ndarray] = []
    for name, shape in zip(segment.inputs, segment.input_shapes, strict=True):
        if name in (MEAN, VAR):
            feeds.append((torch.rand(shape, generator=generator) + 0.5).numpy())
        elif name == ROWS:
            feeds.append(np.ones(rows, np.float32))
        else:
            x = torch.randn(1, shape[1], rows, cols, generator=generator) * 3.0 + 1.0
            feeds.append(x.numpy().astype(bfloat16))  # what the segment before handed on
    return feeds


def test_a_segment_takes_and_gives_its_maps_in_bf16(cache_dir: Path) -> None:
    network, calls, _ = _mosaic_segments(cache_dir)
    assert all(isinstance(call, OpenVinoSegment) for call in calls)
    k = 5  # a residual block ends: two maps in (its input, its last convolution's output)
    segment, call = network.segments[k], calls[k]
    assert sum(segment.handed_on) == 2 and len(segment.maps_out) == 2
    feeds = _feeds(segment, 40, 52, seed=0)  # rows at the segment's scale
    results = call.run_all(*feeds)
    with torch.no_grad():
        expected = segment.module(*(torch.from_numpy(x.astype(np.float32)) for x in feeds))
    call.release()
    *maps, moments = results
    assert [m.dtype for m in maps] == [np.dtype(bfloat16)] * 2 and moments.dtype == np.float32
    for got, want in zip(results, expected, strict=True):
        want = want.numpy()
        assert got.shape == want.shape
        error = np.abs(got.astype(np.float32) - want).max() / np.abs(want).max()
        assert error < 0.02  # bf16 arithmetic, not another computation


def test_the_merged_residual_stack_compiles_for_each_image(cache_dir: Path) -> None:
    """The merged run is compiled for the shape it is given, and again after a release for
    another: both agree with the merged module in torch (its inner norms included)."""
    _, _, whole = _mosaic_segments(cache_dir)
    call = whole.call
    assert isinstance(call, OpenVinoSegment) and (whole.first, whole.last) == (3, 12)
    for rows, cols in ((24, 40), (36, 28)):
        feeds = _feeds(whole.segment, rows, cols, seed=rows)
        results = call.run_all(*feeds)
        with torch.no_grad():
            given = (torch.from_numpy(x.astype(np.float32)) for x in feeds)
            expected = whole.segment.module(*given)
        for got, want in zip(results, expected, strict=True):
            want = want.numpy()
            assert got.shape == want.shape
            error = np.abs(got.astype(np.float32) - want).mean() / np.abs(want).mean()
            assert error < 0.02  # bf16 arithmetic through ten norms, not another computation
        call.release()


def test_a_segment_openvino_cannot_compile_runs_in_fp32(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner compiles each segment once when it builds them: one OpenVINO refuses runs on
    onnxruntime fp32 instead, and the image still comes out, instead of failing requests."""
    check = OpenVinoSegment.check

    def refusing(self: OpenVinoSegment) -> None:
        if "Segment5-" in self.path.name:
            raise RuntimeError("unsupported operation")
        check(self)

    monkeypatch.setattr(OpenVinoSegment, "check", refusing)
    network, calls, _ = _mosaic_segments(cache_dir)
    assert isinstance(calls[5], OnnxModule)
    assert all(isinstance(c, OpenVinoSegment) for k, c in enumerate(calls) if k != 5)
    pixels = pattern(72, 64, seed=2)
    banded = stylize_banded(pixels, network, calls, [], band_pixels=64 * 24)
    runner = StyleRunner(torch.device("cpu"), cache_dir, cpu_precision="fp32")
    style = transformer_style(MOSAIC)
    runner.load_transformer(style)
    reference = runner.stylize(pixels, SingleStyle(style)).astype(np.int16)
    assert np.abs(banded.astype(np.int16) - reference).mean() < 1.0
