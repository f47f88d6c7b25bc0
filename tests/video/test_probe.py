"""Clips are identified and checked from their headers; bad files are refused with 4xx codes."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import pytest

from app.video.probe import (
    MediaKind,
    VideoLimits,
    VideoRejected,
    VideoTooLarge,
    VideoTooLong,
    is_animated,
    probe,
)
from tests.support.video_clips import FPS, GIF_DURATIONS, SIZE


@pytest.mark.parametrize(
    ("name", "kind", "frames"),
    [("mp4", MediaKind.video, 12), ("mov", MediaKind.video, 12), ("gif", MediaKind.gif, 6),
     ("webp", MediaKind.webp, 6)],
)  # fmt: skip
def test_probe_reads_kind_size_frames(
    clips: dict[str, Path], limits: VideoLimits, name: str, kind: MediaKind, frames: int
) -> None:
    info = probe(clips[name], limits)
    assert info.kind is kind
    assert (info.width, info.height) == SIZE
    assert info.frames == frames
    if kind is MediaKind.video:
        assert info.fps == pytest.approx(FPS)
        assert info.duration_s == pytest.approx(12 / FPS, abs=0.05)
        assert info.audio is not None and info.audio.codec == "aac"
    else:
        assert info.duration_s == pytest.approx(sum(GIF_DURATIONS) / 1000)


def test_webm_probe_has_opus(clips: dict[str, Path], limits: VideoLimits) -> None:
    info = probe(clips["webm"], limits)
    assert info.codec == "vp9" and info.audio is not None and info.audio.codec == "opus"


def test_each_limit_is_enforced(clips: dict[str, Path], limits: VideoLimits) -> None:
    size = clips["mp4"].stat().st_size
    with pytest.raises(VideoTooLarge, match="ATELIER_VIDEO_MAX_BYTES"):
        probe(clips["mp4"], VideoLimits(size - 1, 30, 500, 10**6))
    with pytest.raises(VideoTooLarge, match="ATELIER_VIDEO_MAX_FRAME_PIXELS"):
        probe(clips["mp4"], VideoLimits(10**7, 30, 500, SIZE[0] * SIZE[1] - 1))
    with pytest.raises(VideoTooLong, match="ATELIER_VIDEO_MAX_DURATION_S"):
        probe(clips["mp4"], VideoLimits(10**7, 0.2, 500, 10**6))
    with pytest.raises(VideoTooLong, match="ATELIER_VIDEO_MAX_FRAMES"):
        probe(clips["gif"], VideoLimits(10**7, 30, 5, 10**6))
    assert VideoTooLarge.status == 413 and VideoTooLong.status == 422


def test_gif_bomb_is_refused_from_its_header(tmp_path: Path, limits: VideoLimits) -> None:
    """A 60-byte GIF whose logical screen is 65535 x 65535 (4.3 G pixels)."""
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(
        b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
        + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b"
    )  # fmt: skip
    with pytest.raises(VideoTooLarge, match="ATELIER_VIDEO_MAX_FRAME_PIXELS"):
        probe(bomb, limits)


def test_video_over_the_pixel_limit_is_refused_without_decoding(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame-size check reads the stream header: decoding a frame would fail the test."""

    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a frame was decoded before the limits were checked")

    monkeypatch.setattr(av.container.InputContainer, "decode", no_decoding)
    with pytest.raises(VideoTooLarge, match=r"96x64 = 6,144 pixels"):
        probe(clips["mp4"], VideoLimits(10**7, 30, 500, 6_000))


@pytest.mark.parametrize("case", ["empty", "garbage", "truncated", "audio_only", "no_frames"])
def test_unusable_files_are_400(
    tmp_path: Path, clips: dict[str, Path], limits: VideoLimits, case: str
) -> None:
    path = tmp_path / f"{case}.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    elif case == "truncated":
        data = clips["silent"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "audio_only":
        _write_audio_only(path)
    else:
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height = SIZE
            stream.pix_fmt = "yuv420p"
            out.start_encoding()  # a header, and not one frame after it
    with pytest.raises(VideoRejected) as caught:
        probe(path, limits)
    assert caught.value.status == 400


def _write_audio_only(path: Path) -> None:
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        silence = np.zeros((1, 1024), np.float32)
        frame = av.AudioFrame.from_ndarray(silence, format="flt", layout="mono")
        frame.sample_rate = 48000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_is_animated_tells_clips_from_stills(clips: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    still = tmp_path / "still.gif"
    Image.new("RGB", (8, 8), "red").save(still)
    assert is_animated(clips["mp4"]) and is_animated(clips["gif"]) and is_animated(clips["webp"])
    assert not is_animated(still)
