"""The `video` job kind: every frame of an uploaded clip or animation, with an instant style.

The API resolves the style at submission into something a worker on any host can rebuild
without the user-style database (a catalog name, blend weights, or a style vector); painting
uploads travel as `style` inputs and become a vector on the worker. The engine itself lives in
app/video/ and knows nothing of jobs: this module only adapts the JobContext to it.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.core.config import Settings
from app.core.progress import stop_if_asked
from app.jobs.kinds.base import JobContext, JobKind, JobResult, ProgressUpdate
from app.jobs.models import BlobKind
from app.serving.predict import painting_style
from app.serving.service import Service
from app.styles.catalog import (
    MultiStyleBlend,
    NetworkFamily,
    SingleStyle,
    StyleChoice,
    StyleVector,
    UnknownStyle,
)
from app.video.encode import VideoFormat
from app.video.pipeline import VideoOptions, VideoProgress, stylize_video
from app.video.probe import VideoLimits
from app.video.stylizer import FrameStylizer

CHECKPOINT_EVERY_S = 10.0  # a crash loses at most this much work, plus one chunk


@dataclass(frozen=True)
class VideoStyle:
    """A style a worker can rebuild: exactly one of the fields is set."""

    name: str | None = None
    blend: list[float] | None = None
    vector: list[float] | None = None
    painting_weights: list[float] | None = None

    @classmethod
    def of(cls, choice: StyleChoice) -> VideoStyle:
        if isinstance(choice, MultiStyleBlend):
            return cls(blend=[float(w) for w in choice.weights])
        if isinstance(choice, StyleVector):
            return cls(vector=[float(v) for v in choice.vector.reshape(-1)])
        style = choice.style
        if style.network is NetworkFamily.arbitrary and style.style_vector is not None:
            return cls(vector=[float(v) for v in style.style_vector.reshape(-1)])
        return cls(name=style.name)


@dataclass(frozen=True)
class VideoJobOptions:
    style: VideoStyle
    max_size: int
    format: VideoFormat | None = None
    strength: float = 1.0
    preserve_color: bool = False
    stabilize: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["format"] = None if self.format is None else self.format.value
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> VideoJobOptions:
        fmt = values.get("format")
        return cls(
            style=VideoStyle(**values["style"]),
            max_size=int(values["max_size"]),
            format=None if fmt is None else VideoFormat(fmt),
            strength=float(values.get("strength", 1.0)),
            preserve_color=bool(values.get("preserve_color", False)),
            stabilize=float(values.get("stabilize", 0.0)),
            source=dict(values.get("source", {})),
        )


def resolve_style(
    style: VideoStyle, service: Service, paintings: list[bytes], settings: Settings
) -> StyleChoice:
    """Rebuild the submitted style on this worker; ValueError when it no longer exists."""
    runner = service.runner
    assert runner is not None
    if style.painting_weights is not None:
        weights = tuple(style.painting_weights)
        return painting_style(runner, tuple(paintings), weights, max_pixels=settings.max_pixels)
    if style.vector is not None:
        return StyleVector(torch.tensor(style.vector, dtype=torch.float32))
    if style.blend is not None:
        return MultiStyleBlend(torch.tensor(style.blend, dtype=torch.float32))
    try:
        return SingleStyle(service.catalog.get(style.name or ""))
    except UnknownStyle as exc:
        raise ValueError(f"style {style.name!r} is not available on this worker") from exc


class VideoKind(JobKind):
    name = "video"

    def run(self, context: JobContext) -> JobResult:
        settings = context.settings
        options = VideoJobOptions.from_json(context.job.options)
        service = context.style_service()
        assert service.runner is not None
        choice = resolve_style(options.style, service, context.inputs(BlobKind.style), settings)
        stylizer = FrameStylizer(
            service.runner,
            choice,
            strength=options.strength,
            keep_colors=options.preserve_color,
        )
        engine_options = VideoOptions(
            limits=VideoLimits.from_settings(settings),
            max_size=options.max_size,
            output=options.format,
            stabilize=options.stabilize,
            chunk_frames=settings.video_chunk_frames,
            batch_frames=settings.video_batch_frames if context.device.type == "cuda" else 1,
            checkpoint_every_s=CHECKPOINT_EVERY_S,
        )

        def report(progress: VideoProgress) -> None:
            context.report(
                ProgressUpdate(
                    iteration=progress.frames_done,
                    total=progress.total,
                    eta_s=progress.eta_s,
                    metrics={"fps": progress.fps},
                )
            )

        (source_bytes,) = context.inputs(BlobKind.source)
        with tempfile.TemporaryDirectory(prefix="atelier-video-") as folder:
            source = Path(folder) / "source"
            source.write_bytes(source_bytes)
            dest = Path(folder) / "result"
            summary = stylize_video(
                source,
                dest,
                stylizer,
                engine_options,
                on_progress=report,
                should_cancel=context.should_stop,
                on_preview=context.save_preview,
                resume=context.load_checkpoint(),
                on_checkpoint=context.save_checkpoint,
            )
            stop_if_asked(context.should_stop)
            return JobResult(dest.read_bytes(), summary.media_type, summary.width, summary.height)
