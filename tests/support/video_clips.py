"""Clips made in code for the video tests (a pytest plugin loaded by tests/conftest.py): a pan
across a textured picture, a few frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import pattern

from app.video.probe import VideoLimits
from app.video.synthetic import pan_frames, write_animation, write_clip

FPS = 25
SIZE = (96, 64)


@pytest.fixture(scope="session")
def pan() -> list[np.ndarray]:
    """Twelve 96x64 frames of a camera gliding across a picture."""
    return pan_frames(pattern(400, 200, seed=3), 12, SIZE)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory, pan: list[np.ndarray]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    paths = {
        "mp4": folder / "pan.mp4",
        "mov": folder / "pan.mov",
        "webm": folder / "pan.webm",
        "silent": folder / "silent.mp4",
        "gif": folder / "pan.gif",
        "webp": folder / "pan.webp",
    }
    write_clip(paths["mp4"], pan, FPS)
    write_clip(paths["mov"], pan, FPS)
    write_clip(paths["webm"], pan, FPS, codec="libvpx-vp9")
    write_clip(paths["silent"], pan, FPS, audio=False)
    write_animation(paths["gif"], pan[:6], GIF_DURATIONS)
    write_animation(paths["webp"], pan[:6], GIF_DURATIONS, "WEBP")
    return paths


GIF_DURATIONS = [40, 40, 80, 120, 60, 200]


@pytest.fixture
def limits() -> VideoLimits:
    return VideoLimits(max_bytes=10**7, max_duration_s=30, max_frames=500, max_frame_pixels=10**6)


def invert(frames: list[np.ndarray]) -> list[np.ndarray]:
    """A stand-in stylization: exact, cheap, and easy to check against."""
    return [255 - frame for frame in frames]
