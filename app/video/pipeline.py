"""stylize_video: a clip in, the stylized clip out, resumable chunk by chunk.

The caller supplies the stylization (`stylize_frames`, a batch of frames in, the same number
out), so this module knows nothing of networks, jobs or HTTP: the video job kind, the CLI and
the benchmark all drive it the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from app.core.progress import Cancelled, stop_if_asked
from app.video.checkpoint import VideoCheckpoint, load_checkpoint
from app.video.encode import (
    MEDIA_TYPES,
    ChunkEncoder,
    TimedFrame,
    VideoFormat,
    check_output,
    default_format,
    join_chunks,
)
from app.video.frames import SourceFrame, output_size, read_frames, video_timing
from app.video.probe import AnimationTooLarge, MediaInfo, Reserve, VideoLimits, probe
from app.video.stabilize import Stabilizer

StylizeFrames = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class VideoOptions:
    limits: VideoLimits
    max_size: int | None = None
    output: VideoFormat | None = None  # None: MP4 for video, GIF/WebP stay as they are
    stabilize: float = 0.0
    chunk_frames: int = 30
    batch_frames: int = 1
    # The checkpoint holds every finished chunk, so saving it after each one writes O(n^2)
    # bytes over a long clip; a minimum interval bounds that (0 = after every chunk).
    checkpoint_every_s: float = 0.0


@dataclass(frozen=True)
class VideoProgress:
    frames_done: int
    total: int
    fps: float
    eta_s: float | None


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    width: int
    height: int
    format: VideoFormat
    media_type: str
    resumed_from: int


# GIF and WebP writers hold every frame of the animation at once (GIF diffs frames, WebP
# builds the whole file): about one byte a pixel quantized, three before.
ANIMATION_MAX_PIXELS = 150_000_000


def plan(
    source: Path, options: VideoOptions, reserve: Reserve | None = None
) -> tuple[MediaInfo, VideoFormat]:
    """Probe and check a clip against the limits and the requested output; `reserve` holds a
    decode budget while the probe decodes (see `probe`)."""
    info = probe(source, options.limits, reserve)
    fmt = options.output or default_format(info)
    check_output(info, fmt)
    if info.is_animated_image:
        width, height = output_size(info, options.max_size)
        total = info.frames * width * height
        if total > ANIMATION_MAX_PIXELS:
            raise AnimationTooLarge(
                f"{info.frames} frames at {width}x{height} are {total / 1e6:.0f} MP; an animation "
                f"may hold {ANIMATION_MAX_PIXELS / 1e6:.0f} MP: ask a smaller max_size"
            )
    return info, fmt


def stylize_video(
    source: Path,
    dest: Path,
    stylize_frames: StylizeFrames,
    options: VideoOptions,
    *,
    on_progress: Callable[[VideoProgress], None] = lambda _: None,
    should_cancel: Callable[[], bool] = lambda: False,
    on_preview: Callable[[np.ndarray], None] = lambda _: None,
    resume: bytes | None = None,
    on_checkpoint: Callable[[bytes, int], None] = lambda _data, _frames: None,
) -> VideoSummary:
    """Stylize every frame of `source` into `dest`, keeping timing, size ratio and audio.

    After each chunk of `chunk_frames` frames, `on_checkpoint(state, frames_done)` receives the
    bytes to pass back as `resume` after a crash; `should_cancel` is checked before every batch
    (raises Cancelled). Raises VideoRejected for unusable clips, IncompatibleOutput (ValueError)
    for outputs that cannot carry the clip.
    """
    info, fmt = plan(source, options)
    size = output_size(info, options.max_size)
    checkpoint = load_checkpoint(resume, _fingerprint(info, fmt, size, options))
    checkpoint = checkpoint or VideoCheckpoint(_fingerprint(info, fmt, size, options))
    resumed_from = checkpoint.frames_done
    stabilizer = Stabilizer(options.stabilize)
    stabilizer.state = checkpoint.stabilizer
    timing = None if info.is_animated_image else video_timing(source)
    encoder = ChunkEncoder(fmt, size, timing)
    frames = read_frames(source, info, size, options.limits)
    pending: list[TimedFrame] = []
    started = time.monotonic()
    saved_at = -float("inf")
    done = resumed_from
    pts = _StrictPts(1 / (timing.time_base * timing.rate) if timing else None)
    for batch in _batches(_skip(frames, resumed_from, pts), options.batch_frames):
        stop_if_asked(should_cancel)
        stylized = stylize_frames([frame.pixels for frame in batch])
        for frame, pixels in zip(batch, stylized, strict=True):
            output = stabilizer(frame.pixels, np.asarray(pixels))
            pending.append(TimedFrame(output, pts(frame), frame.duration_ms))
        if done == resumed_from:
            on_preview(pending[-1].pixels)  # something to show right away
        done += len(batch)
        if len(pending) >= options.chunk_frames:
            checkpoint.chunks.append(encoder.encode(pending))
            checkpoint.frames_done = done
            checkpoint.stabilizer = stabilizer.state
            if time.monotonic() - saved_at >= options.checkpoint_every_s:
                on_checkpoint(checkpoint.to_bytes(), done)
                saved_at = time.monotonic()
            on_preview(pending[-1].pixels)
            pending = []
        on_progress(_progress(done, resumed_from, max(info.frames, done), started))
    if pending:
        checkpoint.chunks.append(encoder.encode(pending))
        on_preview(pending[-1].pixels)
    if not checkpoint.chunks:
        raise Cancelled() if should_cancel() else RuntimeError("no frames were encoded")
    join_chunks(checkpoint.chunks, fmt, dest, source=source, loop=info.loop)
    final = _progress(done, resumed_from, done, started)
    on_progress(VideoProgress(done, done, final.fps, 0.0))
    return VideoSummary(done, size[0], size[1], fmt, MEDIA_TYPES[fmt], resumed_from)


def _fingerprint(
    info: MediaInfo, fmt: VideoFormat, size: tuple[int, int], options: VideoOptions
) -> str:
    described = {
        "info": asdict(info),
        "format": fmt.value,
        "size": size,
        "stabilize": options.stabilize,
        "chunk_frames": options.chunk_frames,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


class _StrictPts:
    """Source timestamps, made strictly increasing (encoders refuse repeats); missing ones are
    filled in from the frame rate."""

    def __init__(self, ticks_per_frame: Fraction | None) -> None:
        self.step = None if ticks_per_frame is None else max(1, round(ticks_per_frame))
        self.last: int | None = None

    def __call__(self, frame: SourceFrame) -> int | None:
        if self.step is None:
            return None
        pts = frame.pts
        if pts is None:
            pts = 0 if self.last is None else self.last + self.step
        if self.last is not None and pts <= self.last:
            pts = self.last + 1
        self.last = pts
        return pts


def _skip(frames: Iterator[SourceFrame], count: int, pts: _StrictPts) -> Iterator[SourceFrame]:
    """Frames after the first `count` (already in the checkpoint); timestamps stay in step."""
    for frame in frames:
        if frame.index < count:
            pts(frame)
            continue
        yield frame


def _batches(frames: Iterator[SourceFrame], size: int) -> Iterator[list[SourceFrame]]:
    batch: list[SourceFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(done: int, resumed_from: int, total: int, started: float) -> VideoProgress:
    elapsed = time.monotonic() - started
    fps = (done - resumed_from) / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / fps if fps > 0 else None
    return VideoProgress(done, total, round(fps, 2), None if eta is None else round(eta, 1))
