"""OpenVINO segments against eager torch: handed-on maps travel in bf16, the rest in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ml_dtypes import bfloat16

from app.nets.segments import MEAN, ROWS, VAR
from app.serving.openvino_backend import OpenVinoSegment
from app.serving.runner import StyleRunner
from app.styles.catalog import SingleStyle
from tests.nets.test_transformer_net import transformer_style
from tests.serving.test_tiling import MOSAIC


def test_a_segment_takes_and_gives_its_maps_in_bf16(cache_dir: Path) -> None:
    runner = StyleRunner(torch.device("cpu"), cache_dir, cpu_precision="bf16")
    style = transformer_style(MOSAIC)
    runner.load_transformer(style)
    _, pixels = runner._pixels_for(SingleStyle(style))
    network, calls = runner._build_segments(pixels)
    assert all(isinstance(call, OpenVinoSegment) for call in calls)
    k = 5  # a residual block ends: two maps in (its input, its last convolution's output)
    segment, call = network.segments[k], calls[k]
    assert sum(segment.handed_on) == 2 and len(segment.maps_out) == 2
    generator = torch.Generator().manual_seed(0)
    rows = 40  # at the segment's scale (a quarter of the image's)
    feeds: list[np.ndarray] = []
    for name, shape in zip(segment.inputs, segment.input_shapes, strict=True):
        if name in (MEAN, VAR):
            feeds.append((torch.rand(shape, generator=generator) + 0.5).numpy())
        elif name == ROWS:
            feeds.append(np.ones(rows, np.float32))
        else:
            x = torch.randn(1, shape[1], rows, 52, generator=generator) * 3.0 + 1.0
            feeds.append(x.numpy().astype(bfloat16))  # what the segment before handed on
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
