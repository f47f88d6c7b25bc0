"""Identify an uploaded clip and check it against the limits from its headers alone.

Order matters for safety, as for still images: the container is sniffed from an allow-list of
magic bytes, then the container and stream metadata (never a decoded frame) give the size,
duration and frame count that the limits are checked against. FFmpeg's own stream probing
(avformat_find_stream_info) would decode frames at whatever size the bitstream declares, so
clips are opened with decoding switched off (`open_clip`); the one frame the probe decodes, and
every frame a job decodes, goes through a decoder capped at the pixel limit (`cap_decoder`). A
clip that lies in its headers is caught again while decoding (app/video/frames.py), frame by
frame.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import av
from PIL import Image

from app.imaging.decode import ImageRejected, _exif_orientation

if TYPE_CHECKING:
    from app.core.config import Settings


class MediaKind(StrEnum):
    video = "video"
    gif = "gif"
    webp = "webp"


class VideoRejected(ImageRejected):
    """A clip that cannot be used (400 `invalid_video`)."""

    code = "invalid_video"


class VideoTooLarge(VideoRejected):
    """Over a size limit: bytes, frame pixels (413 `video_too_large`)."""

    status = 413
    code = "video_too_large"


class VideoTooLong(VideoRejected):
    """Over the duration or frame-count limit (422 `video_too_long`)."""

    status = 422
    code = "video_too_long"


class AnimationTooLarge(VideoRejected):
    """A GIF/WebP whose frames together exceed what its writer may hold (413
    `animation_too_large`): neither too long nor too large per frame, so it says which."""

    status = 413
    code = "animation_too_large"


Reserve = Callable[[int], AbstractContextManager[None]]


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int
    max_duration_s: float
    max_frames: int
    max_frame_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        """The `ATELIER_VIDEO_MAX_*` limits, the same for the API, the CLI and the workers."""
        return cls(
            max_bytes=settings.video_max_bytes,
            max_duration_s=settings.video_max_duration_s,
            max_frames=settings.video_max_frames,
            max_frame_pixels=settings.video_max_frame_pixels,
        )


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    """What the headers say about a clip; `frames` is exact for GIF/WebP, estimated for video."""

    kind: MediaKind
    width: int
    height: int
    frames: int
    duration_s: float
    fps: float
    container: str = ""
    codec: str = ""
    audio: AudioInfo | None = None
    loop: int | None = None
    # EXIF-style orientation (1 = as stored) that turns the stored frames upright: from a video
    # track's display matrix or an animated image's EXIF. `width`/`height` are the upright size.
    orientation: int = 1

    @property
    def is_animated_image(self) -> bool:
        return self.kind is not MediaKind.video


# Video codecs whose FFmpeg decoders we trust with uploads; everything else is refused.
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg", "prores"})
CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
MP4_BRANDS_AT = 4  # "ftyp" (or an early "moov"/"mdat"/"wide" atom in old QuickTime files)
QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# With every frame skipped, avformat_find_stream_info reads the headers and decodes nothing.
HEADERS_ONLY = {"skip_frame": "all"}
# An H.264/HEVC decoder allocates its per-macroblock tables for the size the bitstream declares
# (up to the codec's own ceiling) before max_pixels refuses the frame; this many probe decodes
# at once bounds that transient whatever the clips claim.
PROBE_DECODES_AT_ONCE = 2
_probe_decodes = threading.BoundedSemaphore(PROBE_DECODES_AT_ONCE)
# Display-matrix rotations (clockwise degrees) as EXIF orientations, so one path turns both.
ROTATION_ORIENTATION = {0: 1, 90: 6, 180: 3, 270: 8}
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


def sniff(head: bytes) -> MediaKind | None:
    """The kind of clip the first bytes announce, or None for anything else."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return MediaKind.gif
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return MediaKind.webp
    if head[MP4_BRANDS_AT : MP4_BRANDS_AT + 4] in QUICKTIME_ATOMS or head[:4] == EBML_MAGIC:
        return MediaKind.video
    return None


def is_animated(path: Path) -> bool:
    """True for video files and for GIF/WebP with more than one frame (the CLI's switch)."""
    with path.open("rb") as handle:
        kind = sniff(handle.read(16))
    if kind is None:
        return False
    if kind is MediaKind.video:
        return True
    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def open_clip(path: Path) -> av.container.InputContainer:
    """Open an uploaded clip without letting FFmpeg's stream probing decode a frame."""
    return av.open(str(path), options=HEADERS_ONLY, metadata_errors="ignore")


def cap_decoder(stream: av.VideoStream, limits: VideoLimits) -> None:
    """Make the stream's decoder refuse, before allocating it, any frame over the pixel limit
    (call before the first decode: the options apply when the decoder opens)."""
    stream.codec_context.options = {"max_pixels": str(limits.max_frame_pixels)}


def probe(path: Path, limits: VideoLimits, reserve: Reserve | None = None) -> MediaInfo:
    """Read and check a clip's metadata; raises VideoRejected / VideoTooLarge / VideoTooLong.

    `reserve(pixels)` (a decode budget's) is held while the probe decodes: one frame of a video,
    each frame of a GIF/WebP in turn, never more than the limit's worth of pixels.
    """
    size = path.stat().st_size
    if size == 0:
        raise VideoRejected("the uploaded file is empty")
    if size > limits.max_bytes:
        raise VideoTooLarge(
            f"the clip is {size:,} bytes; the limit is {limits.max_bytes:,} "
            "(ATELIER_VIDEO_MAX_BYTES)"
        )
    with path.open("rb") as handle:
        kind = sniff(handle.read(16))
    if kind is None:
        raise VideoRejected(
            "not a supported clip; send MP4/MOV (H.264, HEVC, AV1), WebM (VP8, VP9) or an "
            "animated GIF/WebP"
        )
    hold = reserve or (lambda _pixels: nullcontext())
    if kind is not MediaKind.video:
        with hold(limits.max_frame_pixels):
            info = _probe_image(path, kind, limits)
        check_limits(info, limits)
        return info
    info = _probe_video(path)
    check_limits(info, limits)
    with hold(info.width * info.height), _probe_decodes:
        return _check_packets(path, info, limits)


def check_limits(info: MediaInfo, limits: VideoLimits) -> None:
    """The limits every clip must meet, from declared metadata."""
    check_frame_pixels(info.width, info.height, limits)
    if info.duration_s > limits.max_duration_s:
        raise VideoTooLong(
            f"the clip lasts {info.duration_s:.1f} s; the limit is {limits.max_duration_s:g} s "
            "(ATELIER_VIDEO_MAX_DURATION_S)"
        )
    if info.frames > limits.max_frames:
        raise VideoTooLong(
            f"the clip has {info.frames:,} frames; the limit is {limits.max_frames:,} "
            "(ATELIER_VIDEO_MAX_FRAMES)"
        )
    if info.frames < 1 or min(info.width, info.height) < 1:
        raise VideoRejected("the clip has no video frames")


def check_frame_pixels(width: int, height: int, limits: VideoLimits) -> None:
    pixels = width * height
    if pixels > limits.max_frame_pixels:
        raise VideoTooLarge(
            f"frames are {width}x{height} = {pixels:,} pixels; the limit is "
            f"{limits.max_frame_pixels:,} (ATELIER_VIDEO_MAX_FRAME_PIXELS)"
        )


def _probe_video(path: Path) -> MediaInfo:
    try:
        container = open_clip(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoRejected(f"the clip is corrupt or truncated ({exc})") from exc
    with container:
        if container.format.name not in CONTAINERS:
            raise VideoRejected(f"container {container.format.name!r} is not supported")
        if not container.streams.video:
            raise VideoRejected("the file has no video stream (audio only?)")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in VIDEO_CODECS:
            raise VideoRejected(
                f"video codec {codec!r} is not supported; use one of {sorted(VIDEO_CODECS)}"
            )
        width, height = stream.codec_context.width, stream.codec_context.height
        duration = _duration_s(container, stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        frames = stream.frames or math.ceil(duration * fps)
        audio = None
        if container.streams.audio:
            track = container.streams.audio[0]
            audio = AudioInfo(
                codec=track.codec_context.name,
                sample_rate=track.codec_context.sample_rate or 0,
                channels=track.codec_context.channels or 0,
            )
        return MediaInfo(
            kind=MediaKind.video,
            width=width,
            height=height,
            frames=frames,
            duration_s=duration,
            fps=fps,
            container=container.format.name,
            codec=codec,
            audio=audio,
        )


def _check_packets(path: Path, info: MediaInfo, limits: VideoLimits) -> MediaInfo:
    """Read the video packets (parsing only; sizes are already checked) and decode the first
    frame with a capped decoder: a truncated or corrupt clip, or one whose bitstream declares
    larger frames than its container, is refused now, not halfway through a job. The first
    frame also carries the display matrix, which gives the upright orientation."""
    try:
        with open_clip(path) as container:
            stream = container.streams.video[0]
            cap_decoder(stream, limits)
            declared = stream.frames
            packets = 0
            first_frame: av.VideoFrame | None = None
            for packet in container.demux(stream):
                if first_frame is None:  # the end-of-stream packet flushes a delaying decoder
                    first_frame = _first(stream, packet, limits)
                if packet.size == 0:
                    continue
                packets += 1
                if packets > limits.max_frames:
                    raise VideoTooLong(
                        f"the clip has more than {limits.max_frames:,} frames "
                        "(ATELIER_VIDEO_MAX_FRAMES)"
                    )
    except av.FFmpegError as exc:
        raise VideoRejected(f"the clip is corrupt or truncated ({exc})") from exc
    if packets == 0:
        raise VideoRejected("the clip has no video frames")
    if declared and packets < declared:
        raise VideoRejected(f"the clip is truncated: {packets} of {declared} frames are present")
    if first_frame is None:
        raise VideoRejected("the clip's frames cannot be decoded")
    orientation = ROTATION_ORIENTATION[round(-first_frame.rotation / 90) % 4 * 90]
    return upright(info, orientation)


def _first(stream: av.VideoStream, packet: av.Packet, limits: VideoLimits) -> av.VideoFrame | None:
    """The first frame `packet` decodes to, if any; a frame the bitstream declares over the
    limit is refused by the capped decoder and reported as too large, not as corrupt."""
    try:
        frames = stream.codec_context.decode(packet)
    except av.FFmpegError:
        context = stream.codec_context
        check_frame_pixels(context.width, context.height, limits)
        raise
    return frames[0] if frames else None


def upright(info: MediaInfo, orientation: int) -> MediaInfo:
    """`info` for frames turned by `orientation`: sides swap for quarter turns."""
    if orientation in TRANSPOSED_ORIENTATIONS:
        return replace(info, width=info.height, height=info.width, orientation=orientation)
    return replace(info, orientation=orientation)


def _duration_s(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _probe_image(path: Path, kind: MediaKind, limits: VideoLimits) -> MediaInfo:
    """GIF/WebP: the canvas size from the header, checked, then frame durations by seeking
    (which decodes frames one at a time: Pillow learns WebP durations only while loading)."""
    try:
        with Image.open(path, formats=("GIF", "WEBP")) as image:
            width, height = image.size
            check_frame_pixels(width, height, limits)
            orientation = _exif_orientation(image)
            loop = image.info.get("loop")
            frames = int(getattr(image, "n_frames", 1))
            if frames > limits.max_frames:
                raise VideoTooLong(
                    f"the animation has {frames:,} frames; the limit is {limits.max_frames:,} "
                    "(ATELIER_VIDEO_MAX_FRAMES)"
                )
            durations = []
            for index in range(frames):
                image.seek(index)
                image.load()
                durations.append(frame_duration_ms(image))
    except VideoRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise VideoRejected(f"the animated image is corrupt or truncated ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise VideoTooLarge(
            "the animated image declares more pixels than Pillow will open; the limit is "
            f"{limits.max_frame_pixels:,} per frame (ATELIER_VIDEO_MAX_FRAME_PIXELS)"
        ) from exc
    total_ms = sum(durations)
    fps = 1000.0 * frames / total_ms if total_ms else 10.0
    info = MediaInfo(
        kind=kind,
        width=width,
        height=height,
        frames=frames,
        duration_s=total_ms / 1000.0,
        fps=fps,
        container=kind.value,
        codec=kind.value,
        loop=None if loop is None else int(loop),
    )
    return upright(info, orientation)


def frame_duration_ms(image: Image.Image) -> int:
    """The current frame's display time as stored in the file (0 when absent)."""
    return int(image.info.get("duration", 0) or 0)
