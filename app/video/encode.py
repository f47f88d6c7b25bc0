"""Encode stylized frames in self-contained chunks, then join the chunks into the result.

A chunk is a finished piece of output: an H.264 (MP4) or VP9 (WebM) segment that starts with a
key frame and carries the source's own timestamps, or, for GIF/WebP, the frames themselves
(compressed losslessly). Finished chunks are the job's checkpoint, so a crashed worker's
successor re-encodes nothing it already has. Joining copies the chunks' packets and the source's
audio packets into one container: neither is decoded or re-encoded again.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import av
import numpy as np
from PIL import Image

from app.video.frames import VideoTiming
from app.video.probe import AudioInfo, MediaInfo, MediaKind, open_clip


class VideoFormat(StrEnum):
    mp4 = "mp4"
    webm = "webm"
    gif = "gif"
    webp = "webp"


MEDIA_TYPES: dict[VideoFormat, str] = {
    VideoFormat.mp4: "video/mp4",
    VideoFormat.webm: "video/webm",
    VideoFormat.gif: "image/gif",
    VideoFormat.webp: "image/webp",
}

# Audio codecs each container carries as they are (packets copied, never re-encoded).
AUDIO_CODECS: dict[VideoFormat, frozenset[str]] = {
    VideoFormat.mp4: frozenset({"aac", "mp3", "opus", "alac", "ac3", "eac3", "flac"}),
    VideoFormat.webm: frozenset({"opus", "vorbis"}),
}

# veryfast + CRF 20 keeps the stylized texture (busy, high-frequency) at a modest bitrate; no
# B-frames, so every chunk's decode order equals display order and chunks join at any boundary.
H264_OPTIONS = {"preset": "veryfast", "crf": "20", "x264-params": "bframes=0"}
VP9_OPTIONS = {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
WEBP_QUALITY = 90
SPARE_INDEX = 255  # GIF frames use 255 colours; the last palette entry is kept for nudges


class IncompatibleOutput(ValueError):
    """The requested output cannot carry this clip as it is (422)."""


def default_format(info: MediaInfo) -> VideoFormat:
    """Video becomes MP4; animated images stay what they were."""
    if info.kind is MediaKind.gif:
        return VideoFormat.gif
    if info.kind is MediaKind.webp:
        return VideoFormat.webp
    return VideoFormat.mp4


def check_output(info: MediaInfo, fmt: VideoFormat) -> None:
    """Refuse outputs that would need the clip's kind or its audio to change."""
    if info.is_animated_image != (fmt in (VideoFormat.gif, VideoFormat.webp)):
        raise IncompatibleOutput(
            f"a {info.kind.value} clip cannot become {fmt.value}; videos give mp4 or webm, "
            "animated images keep their format"
        )
    if info.is_animated_image and fmt.value != info.kind.value:
        raise IncompatibleOutput(f"a {info.kind.value} animation stays {info.kind.value}")
    if info.audio is not None and info.audio.codec not in AUDIO_CODECS[fmt]:
        raise IncompatibleOutput(_audio_problem(info.audio, fmt))


def _audio_problem(audio: AudioInfo, fmt: VideoFormat) -> str:
    other = VideoFormat.webm if fmt is VideoFormat.mp4 else VideoFormat.mp4
    if audio.codec in AUDIO_CODECS[other]:
        hint = f"ask for format={other.value}"
    else:
        hint = "neither mp4 nor webm can; convert the audio to AAC or Opus first"
    return f"{fmt.value} cannot carry {audio.codec} audio without re-encoding it; {hint}"


@dataclass(frozen=True)
class TimedFrame:
    pixels: np.ndarray
    pts: int | None = None
    duration_ms: int = 0


class ChunkEncoder:
    """Turns consecutive stylized frames into one chunk's bytes."""

    def __init__(self, fmt: VideoFormat, size: tuple[int, int], timing: VideoTiming | None) -> None:
        if timing is None and fmt in (VideoFormat.mp4, VideoFormat.webm):
            raise ValueError("video chunks need the source's time base and rate")
        self.fmt = fmt
        self.size = size
        self.timing = timing

    def encode(self, frames: Sequence[TimedFrame]) -> bytes:
        if self.fmt in (VideoFormat.gif, VideoFormat.webp):
            return _pack_frames(frames)
        return self._encode_video(frames)

    def _encode_video(self, frames: Sequence[TimedFrame]) -> bytes:
        assert self.timing is not None
        time_base = self.timing.time_base
        buffer = io.BytesIO()
        is_mp4 = self.fmt is VideoFormat.mp4
        with av.open(buffer, "w", format="mp4" if is_mp4 else "webm") as out:
            codec, options = ("libx264", H264_OPTIONS) if is_mp4 else ("libvpx-vp9", VP9_OPTIONS)
            stream = out.add_stream(codec, rate=self.timing.rate, options=dict(options))
            stream.width, stream.height = self.size
            stream.pix_fmt = "yuv420p"
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            for timed in frames:
                frame = av.VideoFrame.from_ndarray(timed.pixels, format="rgb24")
                frame.pts = timed.pts
                frame.time_base = time_base
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return buffer.getvalue()


def _pack_frames(frames: Sequence[TimedFrame]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        pixels=np.stack([f.pixels for f in frames]),
        durations=np.array([f.duration_ms for f in frames], dtype=np.int64),
    )
    return buffer.getvalue()


def unpack_frames(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W,3 pixels, N durations in ms) of a GIF/WebP chunk."""
    with np.load(io.BytesIO(chunk), allow_pickle=False) as data:
        return data["pixels"], data["durations"]


def join_chunks(
    chunks: Sequence[bytes], fmt: VideoFormat, dest: Path, *, source: Path, loop: int | None
) -> None:
    """Write the result: video chunks plus the source's audio packets, or an animation."""
    if fmt in (VideoFormat.gif, VideoFormat.webp):
        _write_animation(chunks, fmt, dest, loop)
    else:
        _mux_video(chunks, fmt, dest, source)


def _mux_video(chunks: Sequence[bytes], fmt: VideoFormat, dest: Path, source: Path) -> None:
    options = {"movflags": "+faststart"} if fmt is VideoFormat.mp4 else {}
    with (
        open_clip(source) as original,
        av.open(io.BytesIO(chunks[0])) as first,
        av.open(str(dest), "w", format=fmt.value, options=options) as out,
    ):
        video = out.add_stream_from_template(first.streams.video[0])
        streams: list[Iterator[av.Packet]] = [_chunk_packets(chunks, video)]
        if original.streams.audio:
            audio_in = original.streams.audio[0]
            audio = out.add_stream_from_template(audio_in)
            streams.append(_packets(original.demux(audio_in), audio))
        # Interleave by time, so players and the muxer never buffer one whole stream.
        for _, _, packet in heapq.merge(*(_keyed(s, n) for n, s in enumerate(streams))):
            out.mux(packet)


def _keyed(packets: Iterator[av.Packet], order: int) -> Iterator[tuple[float, int, av.Packet]]:
    for packet in packets:
        yield float((packet.dts or 0) * packet.time_base), order, packet


def _packets(packets: Iterator[av.Packet], stream: av.stream.Stream) -> Iterator[av.Packet]:
    for packet in packets:
        if packet.dts is None:  # the demuxer's end-of-stream flush packet
            continue
        packet.stream = stream
        yield packet


def _chunk_packets(chunks: Sequence[bytes], stream: av.stream.Stream) -> Iterator[av.Packet]:
    for chunk in chunks:
        with av.open(io.BytesIO(chunk)) as container:
            yield from _packets(container.demux(container.streams.video[0]), stream)


def _write_animation(
    chunks: Sequence[bytes], fmt: VideoFormat, dest: Path, loop: int | None
) -> None:
    images: list[Image.Image] = []
    durations: list[int] = []
    for chunk in chunks:
        pixels, chunk_durations = unpack_frames(chunk)
        images.extend(Image.fromarray(frame) for frame in pixels)
        durations.extend(int(d) for d in chunk_durations)
    extra: dict[str, object] = {} if loop is None else {"loop": loop}
    if fmt is VideoFormat.gif:
        images = _distinct_gif_frames(images)
        extra["disposal"] = 1
    else:
        extra.update(quality=WEBP_QUALITY, method=4)
    images[0].save(
        dest,
        fmt.value.upper(),
        save_all=True,
        append_images=images[1:],
        duration=durations,
        **extra,
    )


def _distinct_gif_frames(images: list[Image.Image]) -> list[Image.Image]:
    """Quantize each frame; nudge one palette index where a frame equals the previous one.

    Pillow's GIF writer merges identical consecutive frames (adding their delays), which would
    change the frame count; one pixel one bit off keeps every frame.
    """
    quantized: list[Image.Image] = []
    previous: np.ndarray | None = None
    for image in images:
        frame = image.quantize(colors=SPARE_INDEX, method=Image.Quantize.MEDIANCUT)
        indices = np.asarray(frame)
        if previous is not None and np.array_equal(indices, previous):
            # Entry 255 is spare (255 colours were asked for): a copy of pixel (0, 0)'s colour
            # with the lowest red bit flipped.
            palette = (frame.getpalette() or []) + [0] * 768
            index = int(indices[0, 0])
            red, green, blue = palette[3 * index : 3 * index + 3]
            palette[3 * SPARE_INDEX : 3 * SPARE_INDEX + 3] = [red ^ 1, green, blue]
            frame.putpalette(palette[:768])
            frame.putpixel((0, 0), SPARE_INDEX)
            indices = np.asarray(frame)
        quantized.append(frame)
        previous = indices
    return quantized
