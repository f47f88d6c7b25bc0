"""stylize_video keeps frame count, timing, size ratio and the audio packets; it resumes from a
checkpoint to the same output; it cancels between frames; bad clips fail with 4xx errors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from app.gatys.optimize import Cancelled
from app.video.encode import IncompatibleOutput, VideoFormat
from app.video.pipeline import VideoOptions, stylize_video
from app.video.probe import VideoLimits, VideoRejected, VideoTooLong
from tests.support.video_clips import GIF_DURATIONS, SIZE, invert


def decoded(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """PyAV's own decode of a video file: RGB frames and their timestamps."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [f.pts for f in frames]


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [
            (float(p.pts * p.time_base), bytes(p))
            for p in container.demux(stream)
            if p.dts is not None
        ]


@pytest.mark.parametrize(("name", "fmt"), [("mp4", "mp4"), ("mov", "mp4"), ("webm", "webm")])
def test_video_keeps_frames_timing_and_audio(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path, name: str, fmt: str
) -> None:
    dest = tmp_path / f"out.{fmt}"
    options = VideoOptions(limits, chunk_frames=5, output=VideoFormat(fmt))
    summary = stylize_video(clips[name], dest, invert, options)
    source_frames, source_pts = decoded(clips[name])
    out_frames, out_pts = decoded(dest)
    assert summary.frames == len(out_frames) == len(source_frames) == 12
    with av.open(str(clips[name])) as a, av.open(str(dest)) as b:
        source_times = [float(p * a.streams.video[0].time_base) for p in source_pts]
        out_times = [float(p * b.streams.video[0].time_base) for p in out_pts]
        assert b.streams.video[0].codec_context.name == ("h264" if fmt == "mp4" else "vp9")
    assert out_times == pytest.approx(source_times, abs=1e-3)
    assert (summary.width, summary.height) == SIZE
    # The stand-in stylization (inversion) survives encoding: each output frame is the
    # negative of the source frame, up to codec loss.
    for source, out in zip(source_frames, out_frames, strict=True):
        assert np.abs(255.0 - source - out).mean() < 12
    # Audio is remuxed: the very same packets at the very same times.
    assert audio_packets(dest) == audio_packets(clips[name])


def test_clip_without_audio_stays_silent(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    dest = tmp_path / "out.mp4"
    stylize_video(clips["silent"], dest, invert, VideoOptions(limits))
    with av.open(str(dest)) as container:
        assert not container.streams.audio and container.streams.video[0].frames == 12


@pytest.mark.parametrize("name", ["gif", "webp"])
def test_animation_keeps_kind_frames_and_durations(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path, name: str
) -> None:
    dest = tmp_path / f"out.{name}"
    summary = stylize_video(clips[name], dest, invert, VideoOptions(limits, chunk_frames=4))
    assert summary.format is VideoFormat(name)
    with Image.open(dest) as out:
        assert out.format == name.upper() and out.n_frames == 6 and out.size == SIZE
        durations = []
        for index in range(out.n_frames):
            out.seek(index)
            out.load()
            durations.append(out.info["duration"])
    assert durations == GIF_DURATIONS


def test_identical_gif_frames_are_kept(limits: VideoLimits, tmp_path: Path) -> None:
    from app.video.synthetic import write_animation

    still = np.full((16, 16, 3), 90, np.uint8)
    source = tmp_path / "still.gif"
    write_animation(source, [still + k for k in range(4)], [50, 60, 70, 80])
    dest = tmp_path / "out.gif"
    stylize_video(
        source, dest, lambda frames: [np.zeros_like(f) for f in frames], VideoOptions(limits)
    )
    with Image.open(dest) as out:
        assert out.n_frames == 4
        durations = []
        for index in range(4):
            out.seek(index)
            durations.append(out.info["duration"])
    assert durations == [50, 60, 70, 80]


def test_webm_source_becomes_mp4_by_default(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    summary = stylize_video(clips["webm"], tmp_path / "out", invert, VideoOptions(limits))
    assert summary.format is VideoFormat.mp4 and summary.media_type == "video/mp4"
    assert audio_packets(tmp_path / "out") == audio_packets(clips["webm"])


def test_resume_from_checkpoint_gives_the_same_clip(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    options = VideoOptions(limits, chunk_frames=4, stabilize=0.6)
    whole = tmp_path / "whole.mp4"
    stylize_video(clips["mp4"], whole, invert, options)

    checkpoints: list[tuple[bytes, int]] = []
    calls = {"frames": 0}

    def crash_after_six(frames: list[np.ndarray]) -> list[np.ndarray]:
        calls["frames"] += len(frames)
        if calls["frames"] > 6:
            raise RuntimeError("worker died")
        return invert(frames)

    with pytest.raises(RuntimeError):
        stylize_video(
            clips["mp4"], tmp_path / "x.mp4", crash_after_six, options,
            on_checkpoint=lambda data, done: checkpoints.append((data, done)),
        )  # fmt: skip
    data, done = checkpoints[-1]
    assert done == 4
    stylized_again: list[int] = []

    def counting(frames: list[np.ndarray]) -> list[np.ndarray]:
        stylized_again.append(len(frames))
        return invert(frames)

    resumed = tmp_path / "resumed.mp4"
    summary = stylize_video(clips["mp4"], resumed, counting, options, resume=data)
    assert summary.resumed_from == 4 and sum(stylized_again) == 8
    whole_frames, whole_pts = decoded(whole)
    resumed_frames, resumed_pts = decoded(resumed)
    assert resumed_pts == whole_pts
    # The restored chunk is the very same bytes; later frames match up to the (multi-threaded,
    # so not bit-exact) optical flow of the stabilizer.
    for a, b in zip(whole_frames[:4], resumed_frames[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole_frames[4:], resumed_frames[4:], strict=True):
        assert np.abs(a.astype(np.float64) - b).mean() < 1.0


def test_checkpoint_for_other_options_is_ignored(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    saved: list[bytes] = []
    stylize_video(
        clips["mp4"], tmp_path / "a.mp4", invert, VideoOptions(limits, chunk_frames=4),
        on_checkpoint=lambda data, _: saved.append(data),
    )  # fmt: skip
    summary = stylize_video(
        clips["mp4"], tmp_path / "b.mp4", invert, VideoOptions(limits, max_size=48),
        resume=saved[-1],
    )  # fmt: skip
    assert summary.resumed_from == 0 and (summary.width, summary.height) == (48, 32)


def test_cancel_stops_before_the_next_frame(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    seen: list[int] = []

    def stylize(frames: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(len(frames))
        return invert(frames)

    with pytest.raises(Cancelled):
        stylize_video(
            clips["mp4"], tmp_path / "c.mp4", stylize, VideoOptions(limits),
            should_cancel=lambda: len(seen) >= 3,
        )  # fmt: skip
    assert sum(seen) == 3


def test_progress_counts_frames(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    reports = []
    stylize_video(
        clips["mp4"], tmp_path / "p.mp4", invert, VideoOptions(limits), on_progress=reports.append
    )
    assert [r.frames_done for r in reports[:-1]] == list(range(1, 13))
    assert reports[-1].frames_done == reports[-1].total == 12
    assert all(r.fps > 0 for r in reports[1:-1])


def test_output_size_fits_max_size_with_even_sides(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    summary = stylize_video(
        clips["mp4"], tmp_path / "s.mp4", invert, VideoOptions(limits, max_size=50)
    )
    assert (summary.width, summary.height) == (50, 32)  # 50 x 33.3 -> even 32


def test_incompatible_outputs_are_refused(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    with pytest.raises(IncompatibleOutput, match="format=mp4"):
        stylize_video(
            clips["mp4"], tmp_path / "a.webm", invert, VideoOptions(limits, output=VideoFormat.webm)
        )
    with pytest.raises(IncompatibleOutput):
        stylize_video(
            clips["gif"], tmp_path / "a.mp4", invert, VideoOptions(limits, output=VideoFormat.mp4)
        )


def test_undecodable_frames_are_rejected(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    data = bytearray(clips["silent"].read_bytes())
    start = data.index(b"mdat") + 4
    data[start : start + 4000] = bytes(4000)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    with pytest.raises(VideoRejected) as caught:
        stylize_video(broken, tmp_path / "b.mp4", invert, VideoOptions(limits))
    assert caught.value.status == 400


def test_a_huge_animation_is_refused_before_decoding(
    clips: dict[str, Path], limits: VideoLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.video import pipeline

    monkeypatch.setattr(pipeline, "ANIMATION_MAX_PIXELS", 6 * SIZE[0] * SIZE[1] - 1)
    with pytest.raises(VideoRejected, match="smaller max_size") as caught:
        pipeline.plan(clips["gif"], VideoOptions(limits))
    # Neither its duration nor its frame count is over a limit: the code says what is.
    assert not isinstance(caught.value, VideoTooLong)
    assert (caught.value.status, caught.value.code) == (413, "animation_too_large")
    info, _ = pipeline.plan(clips["gif"], VideoOptions(limits, max_size=48))
    assert info.frames == 6


def test_checkpoints_can_be_spaced_in_time(
    clips: dict[str, Path], limits: VideoLimits, tmp_path: Path
) -> None:
    saved: list[int] = []
    every_chunk = VideoOptions(limits, chunk_frames=2)
    stylize_video(
        clips["mp4"], tmp_path / "a.mp4", invert, every_chunk,
        on_checkpoint=lambda _, done: saved.append(done),
    )  # fmt: skip
    assert saved == [2, 4, 6, 8, 10, 12]
    saved.clear()
    spaced = VideoOptions(limits, chunk_frames=2, checkpoint_every_s=3600)
    stylize_video(
        clips["mp4"], tmp_path / "b.mp4", invert, spaced,
        on_checkpoint=lambda _, done: saved.append(done),
    )  # fmt: skip
    assert saved == [2]  # the first chunk, then nothing within the hour


def test_audio_no_output_can_carry_is_explained(limits: VideoLimits, tmp_path: Path) -> None:
    """PCM audio (common in camera MOV files) fits neither MP4 nor WebM as it is."""
    from app.video.encode import check_output
    from app.video.probe import AudioInfo, MediaInfo, MediaKind

    info = MediaInfo(MediaKind.video, 64, 48, 10, 0.4, 25.0, audio=AudioInfo("pcm_s16le", 48000, 2))
    with pytest.raises(IncompatibleOutput, match="convert the audio to AAC or Opus"):
        check_output(info, VideoFormat.mp4)
