"""FrameStylizer and StyleRunner.stylize_batch (the GPU path, checked here on CPU torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import encode, make_settings, pattern

from app.serving.predict import painting_style
from app.serving.service import Service
from app.styles.catalog import StyleVector
from app.video.stylizer import FrameStylizer


@pytest.fixture(scope="module")
def torch_service(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Service:
    settings = make_settings(tmp_path_factory.mktemp("torch"), cache_dir, cpu_backend="torch")
    service = Service(settings)
    service.load(warmup=False)
    return service


def test_a_batch_equals_frame_by_frame(torch_service: Service) -> None:
    runner = torch_service.runner
    assert runner is not None
    frames = np.stack([pattern(40, 28, seed=s) for s in range(3)])
    for spec in ("starry-swirls", "starry-swirls:0.5,golden-haze:0.5"):
        choice = torch_service.catalog.resolve(spec)
        batch = runner.stylize_batch(frames, choice)
        assert batch.shape == frames.shape and batch.dtype == np.uint8
        for frame, out in zip(frames, batch, strict=True):
            single = runner.stylize(frame, choice)
            assert np.abs(out.astype(int) - single).max() <= 1


def test_painting_strength_uses_one_vector_for_the_whole_clip(torch_service: Service) -> None:
    """At strength < 1 the photo's own style vector comes from the first frame only, so two
    different later frames are rendered with the very same style vector."""
    runner = torch_service.runner
    assert runner is not None
    painting = painting_style(runner, (encode(pattern(64, 64, seed=8)),), None, max_pixels=10**7)
    frames = [pattern(48, 32, seed=s) for s in (1, 2, 3)]
    stylizer = FrameStylizer(runner, painting, strength=0.5)
    stylizer(frames[:1])
    assert isinstance(stylizer.choice, StyleVector)
    expected = 0.5 * painting.vector + 0.5 * runner.style_vector(frames[0])
    np.testing.assert_allclose(stylizer.choice.vector, expected, atol=1e-5)
    later = stylizer(frames[1:])
    for frame, out in zip(frames[1:], later, strict=True):
        np.testing.assert_array_equal(out, runner.stylize(frame, StyleVector(expected)))
