"""The video job kind against a fake JobContext: real networks, a tiny clip, every style source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from conftest import encode, pattern

from app.core.config import Settings
from app.gatys.optimize import Cancelled
from app.jobs.kinds.base import JobResult, ProgressReport
from app.jobs.kinds.video import VideoJobOptions, VideoKind, VideoStyle, loaded_service
from app.jobs.models import BlobKind
from app.serving.service import Service


@dataclass
class FakeJob:
    options: dict[str, Any]


@dataclass
class FakeContext:
    """Just enough of the executor's JobContext: inputs, progress, previews, checkpoints."""

    job: FakeJob
    settings: Settings
    blobs: dict[BlobKind, list[bytes]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reports: list[ProgressReport] = field(default_factory=list)
    previews: list[np.ndarray] = field(default_factory=list)
    checkpoint: tuple[bytes, int] | None = None
    stop_after_reports: int | None = None

    def inputs(self, kind: BlobKind) -> list[bytes]:
        return self.blobs.get(kind, [])

    def report(self, progress: ProgressReport) -> None:
        self.reports.append(progress)

    def save_preview(self, image: np.ndarray) -> None:
        self.previews.append(image)

    def should_stop(self) -> bool:
        return self.stop_after_reports is not None and len(self.reports) >= self.stop_after_reports

    def load_checkpoint(self) -> bytes | None:
        return None if self.checkpoint is None else self.checkpoint[0]

    def save_checkpoint(self, data: bytes, iteration: int) -> None:
        self.checkpoint = (data, iteration)


@pytest.fixture(scope="module")
def video_settings(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Settings:
    from conftest import make_settings

    return make_settings(tmp_path_factory.mktemp("video-kind"), cache_dir, video_chunk_frames=4)


@pytest.fixture(scope="module")
def service(video_settings: Settings) -> Service:
    return loaded_service(video_settings)


def context_for(
    settings: Settings,
    clip: Path,
    style: VideoStyle,
    paintings: list[bytes] | None = None,
    **options: Any,
) -> FakeContext:
    values = VideoJobOptions(style=style, max_size=96, stabilize=0.0, **options).to_json()
    blobs = {BlobKind.source: [clip.read_bytes()], BlobKind.style: paintings or []}
    return FakeContext(FakeJob(values), settings, blobs)


def frames_of(data: bytes, tmp_path: Path) -> list[np.ndarray]:
    path = tmp_path / "result.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_catalog_style_matches_the_instant_path(
    video_settings: Settings,
    service: Service,
    clips: dict[str, Path],
    pan: list[np.ndarray],
    tmp_path: Path,
) -> None:
    context = context_for(video_settings, clips["mp4"], VideoStyle(name="starry-swirls"))
    result = VideoKind().run(context)
    assert isinstance(result, JobResult) and result.media_type == "video/mp4"
    assert (result.width, result.height) == (96, 64)
    frames = frames_of(result.data, tmp_path)
    assert len(frames) == 12
    # Independent reference: the instant runner on PyAV's decode of the source frame.
    assert service.runner is not None
    with av.open(str(clips["mp4"])) as container:
        source = next(container.decode(video=0)).to_ndarray(format="rgb24")
    reference = service.runner.stylize(source, service.catalog.resolve("starry-swirls"))
    other = service.runner.stylize(source, service.catalog.resolve("golden-haze"))
    distance = np.abs(frames[0].astype(float) - reference).mean()  # H.264 loss on busy texture
    assert distance < 16
    assert distance < 0.5 * np.abs(frames[0].astype(float) - other).mean()
    assert distance < 0.5 * np.abs(frames[0].astype(float) - source).mean()
    assert context.reports[-1].iteration == 12 and context.reports[-1].total == 12
    assert "fps" in context.reports[0].metrics
    assert context.previews and context.previews[-1].shape == (64, 96, 3)
    assert context.checkpoint is not None and context.checkpoint[1] % 4 == 0


def test_painting_and_vector_styles_agree(
    video_settings: Settings, service: Service, clips: dict[str, Path], tmp_path: Path
) -> None:
    """A painting upload and the same painting's style vector give the same video."""
    painting = encode(pattern(128, 128, seed=9), "PNG")
    from app.serving.predict import painting_style

    assert service.runner is not None
    vector = painting_style(service.runner, (painting,), None, max_pixels=10**7)
    by_painting = VideoKind().run(
        context_for(video_settings, clips["gif"], VideoStyle(painting_weights=[1.0]), [painting])
    )
    by_vector = VideoKind().run(context_for(video_settings, clips["gif"], VideoStyle.of(vector)))
    assert by_painting.media_type == "image/gif"
    assert by_painting.data == by_vector.data


def test_blend_strength_and_colour_options_run(
    video_settings: Settings, service: Service, clips: dict[str, Path], tmp_path: Path
) -> None:
    choice = service.catalog.resolve("starry-swirls:0.5,golden-haze:0.5")
    full = frames_of(
        VideoKind().run(context_for(video_settings, clips["mp4"], VideoStyle.of(choice))).data,
        tmp_path,
    )
    none = frames_of(
        VideoKind()
        .run(context_for(video_settings, clips["mp4"], VideoStyle.of(choice), strength=0.0))
        .data,
        tmp_path,
    )
    with av.open(str(clips["mp4"])) as container:
        source = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # strength 0 gives back the (re-encoded) source; strength 1 does not.
    assert np.abs(none[3].astype(float) - source[3]).mean() < 6
    assert np.abs(full[3].astype(float) - source[3]).mean() > 20


def test_cancel_raises_cancelled(
    video_settings: Settings, service: Service, clips: dict[str, Path]
) -> None:
    context = context_for(video_settings, clips["mp4"], VideoStyle(name="starry-swirls"))
    context.stop_after_reports = 2
    with pytest.raises(Cancelled):
        VideoKind().run(context)
    assert len(context.reports) == 2


def test_resume_from_the_saved_checkpoint(
    video_settings: Settings, service: Service, clips: dict[str, Path], tmp_path: Path
) -> None:
    first = context_for(video_settings, clips["mp4"], VideoStyle(name="starry-swirls"))
    first.stop_after_reports = 5
    with pytest.raises(Cancelled):
        VideoKind().run(first)
    assert first.checkpoint is not None and first.checkpoint[1] == 4
    second = context_for(video_settings, clips["mp4"], VideoStyle(name="starry-swirls"))
    second.checkpoint = first.checkpoint
    result = VideoKind().run(second)
    assert len(frames_of(result.data, tmp_path)) == 12
    assert second.reports[0].iteration == 5  # frames 1-4 came from the checkpoint


def test_a_style_gone_from_the_worker_fails_clearly(
    video_settings: Settings, service: Service, clips: dict[str, Path]
) -> None:
    with pytest.raises(ValueError, match="not available"):
        VideoKind().run(context_for(video_settings, clips["mp4"], VideoStyle(name="no-such-style")))
