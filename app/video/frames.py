"""Decode a probed clip frame by frame, scaled to the output size, with its timing.

Frames stream one at a time (memory stays at one frame whatever the clip's length), and every
decoded frame is checked again against the limits, so a clip whose headers lie about its size or
length is stopped at the first frame that breaks them. Frames come out upright (the probe's
orientation: a phone's display matrix, an animation's EXIF) and in SDR BT.709 colours
(app/video/tonemap.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from app.imaging.decode import _ORIENTATION_TRANSPOSE, _to_rgb_array, target_size
from app.video.probe import (
    TRANSPOSED_ORIENTATIONS,
    MediaInfo,
    VideoLimits,
    VideoRejected,
    VideoTooLarge,
    VideoTooLong,
    cap_decoder,
    frame_duration_ms,
    open_clip,
)
from app.video.tonemap import SdrFrames


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame: `pts` in the video stream's time base, `duration_ms` for GIF/WebP."""

    index: int
    pixels: np.ndarray
    pts: int | None = None
    duration_ms: int = 0


def output_size(info: MediaInfo, max_size: int | None) -> tuple[int, int]:
    """Fit inside `max_size` keeping the aspect ratio; even sides for video (4:2:0 chroma)."""
    width, height = target_size(info.width, info.height, max_size)
    if info.is_animated_image:
        return width, height
    return max(2, width - width % 2), max(2, height - height % 2)


@dataclass(frozen=True)
class VideoTiming:
    time_base: Fraction
    rate: Fraction


def video_timing(path: Path) -> VideoTiming:
    """The first video stream's time base and average rate (what the encoder must reuse)."""
    with open_clip(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoTiming(time_base=stream.time_base or Fraction(1, 90000), rate=Fraction(rate))


def read_frames(
    path: Path, info: MediaInfo, size: tuple[int, int], limits: VideoLimits
) -> Iterator[SourceFrame]:
    """Every frame of the clip as RGB uint8 at `size`; raises VideoRejected on corrupt data."""
    if info.is_animated_image:
        frames = _image_frames(path, size, info.orientation)
    else:
        frames = _video_frames(path, size, info.orientation, limits)
    count = 0
    for frame in frames:
        count += 1
        if count > limits.max_frames:
            raise VideoTooLong(
                f"the clip has more than {limits.max_frames:,} frames (ATELIER_VIDEO_MAX_FRAMES)"
            )
        yield frame
    if count == 0:
        raise VideoRejected("the clip has no decodable video frames")


def _video_frames(
    path: Path, size: tuple[int, int], orientation: int, limits: VideoLimits
) -> Iterator[SourceFrame]:
    width, height = _stored(size, orientation)
    try:
        with open_clip(path) as container:
            stream = container.streams.video[0]
            cap_decoder(stream, limits)
            stream.thread_type = "AUTO"
            declared = stream.codec_context.width * stream.codec_context.height
            to_rgb = SdrFrames(width, height)
            for index, frame in enumerate(container.decode(stream)):
                if frame.width * frame.height > declared:
                    raise VideoTooLarge(
                        f"frame {index} is {frame.width}x{frame.height}, larger than the "
                        "clip's header declares"
                    )
                pixels = turn(to_rgb(frame), orientation)
                yield SourceFrame(index, pixels, pts=frame.pts)
    except av.FFmpegError as exc:
        raise VideoRejected(f"the clip is corrupt or truncated ({exc})") from exc


def _image_frames(path: Path, size: tuple[int, int], orientation: int) -> Iterator[SourceFrame]:
    try:
        with Image.open(path, formats=("GIF", "WEBP")) as image:
            for index in range(int(getattr(image, "n_frames", 1))):
                image.seek(index)
                pixels = turn(_to_rgb_array(image), orientation)
                if (pixels.shape[1], pixels.shape[0]) != size:
                    resized = Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS)
                    pixels = np.asarray(resized)
                yield SourceFrame(index, pixels, duration_ms=frame_duration_ms(image))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise VideoRejected(f"the animated image is corrupt or truncated ({exc})") from exc


def _stored(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The stored (pre-turn) size of frames that are `size` once upright."""
    width, height = size
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def turn(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """HxWx3 pixels as stored, turned upright by an EXIF-style orientation."""
    if orientation not in _ORIENTATION_TRANSPOSE:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(_ORIENTATION_TRANSPOSE[orientation]))
