"""Rotated phone clips and animations come back upright.

A phone filming in portrait stores landscape frames and a display matrix saying "turn 90°
clockwise to show". The clips here carry a red marker in the stored top-left corner; where it
must land once upright is worked out by hand for each rotation, not by the code under test.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from app.video.pipeline import VideoOptions, stylize_video
from app.video.probe import VideoLimits, probe
from tests.support.video_clips import invert

STORED = (320, 240)  # width, height as coded
MARKER = 48  # side of the red square in the stored top-left corner
RED = np.array([255, 0, 0])


def _stored_frames(count: int = 5) -> list[np.ndarray]:
    frames = []
    for index in range(count):  # distinct frames: animation writers merge repeats
        pixels = np.full((STORED[1], STORED[0], 3), 100 + 10 * index, np.uint8)
        pixels[:MARKER, :MARKER] = RED
        frames.append(pixels)
    return frames


def _write_rotated(path: Path, counter_clockwise: float) -> None:
    """H.264 MP4 with a display matrix; PyAV's angle is counter-clockwise, as FFmpeg's
    `-display_rotation` and as ffprobe reports it (a portrait iPhone clip reads -90)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = STORED
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(counter_clockwise)
        for pixels in _stored_frames():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))


def _corner_of_marker(pixels: np.ndarray) -> str:
    height, width = pixels.shape[:2]
    corners = {
        "top-left": pixels[: height // 8, : width // 8],
        "top-right": pixels[: height // 8, -width // 8 :],
        "bottom-left": pixels[-height // 8 :, : width // 8],
        "bottom-right": pixels[-height // 8 :, -width // 8 :],
    }
    reds = [name for name, patch in corners.items() if _is_red(patch.mean(axis=(0, 1)))]
    assert len(reds) == 1, f"marker found in {reds}"
    return reds[0]


def _is_red(colour: np.ndarray) -> bool:
    return bool(np.abs(colour - RED).max() < 40)


def _read_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# (PyAV counter-clockwise degrees, upright size, corner where the stored top-left lands)
CASES = [
    (-90, (240, 320), "top-right"),  # turn 90° clockwise: the phone held upright
    (90, (240, 320), "bottom-left"),  # turn 90° counter-clockwise
    (180, (320, 240), "bottom-right"),
    (0, (320, 240), "top-left"),
]


@pytest.mark.parametrize(("rotation", "upright_size", "corner"), CASES)
def test_rotated_clip_comes_back_upright(
    tmp_path: Path, rotation: int, upright_size: tuple[int, int], corner: str
) -> None:
    source = tmp_path / "phone.mp4"
    _write_rotated(source, rotation)
    limits = VideoLimits(10**7, 30, 500, 10**6)
    info = probe(source, limits)
    assert (info.width, info.height) == upright_size
    dest = tmp_path / "out.mp4"
    summary = stylize_video(source, dest, lambda frames: frames, VideoOptions(limits))
    assert (summary.width, summary.height) == upright_size
    frames = _read_all(dest)
    assert len(frames) == 5
    for pixels in frames:
        assert (pixels.shape[1], pixels.shape[0]) == upright_size
        assert _corner_of_marker(pixels) == corner
    with av.open(str(dest)) as container:  # upright pixels: no matrix left to apply twice
        assert next(container.decode(video=0)).rotation == 0


def test_stylizer_sees_upright_frames(tmp_path: Path) -> None:
    source = tmp_path / "phone.mp4"
    _write_rotated(source, -90)
    seen: list[tuple[int, ...]] = []

    def record(frames: list[np.ndarray]) -> list[np.ndarray]:
        seen.extend(frame.shape for frame in frames)
        return invert(frames)

    stylize_video(
        source, tmp_path / "o.mp4", record, VideoOptions(VideoLimits(10**7, 30, 500, 10**6))
    )
    assert set(seen) == {(320, 240, 3)}


def test_animation_with_exif_orientation_comes_back_upright(tmp_path: Path) -> None:
    """An animated WebP whose EXIF says orientation 6 (turn 90° clockwise to show)."""
    source = tmp_path / "anim.webp"
    images = [Image.fromarray(pixels) for pixels in _stored_frames(3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    images[0].save(
        source, "WEBP", save_all=True, append_images=images[1:], duration=100, lossless=True,
        exif=exif.tobytes(),
    )  # fmt: skip
    limits = VideoLimits(10**7, 30, 500, 10**6)
    info = probe(source, limits)
    assert (info.width, info.height, info.orientation) == (240, 320, 6)
    dest = tmp_path / "out.webp"
    stylize_video(source, dest, lambda frames: frames, VideoOptions(limits))
    with Image.open(dest) as result:
        assert result.n_frames == 3
        for index in range(3):
            result.seek(index)
            pixels = np.asarray(result.convert("RGB"))
            assert (pixels.shape[1], pixels.shape[0]) == (240, 320)
            assert _corner_of_marker(pixels) == "top-right"
