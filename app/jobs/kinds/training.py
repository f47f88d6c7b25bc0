"""Training jobs: learn a fast TransformerNet style from a painting, then serve it by name.

The job's options hold the new style's name and description beside the engine's TrainOptions.
Photos come from the job's uploads, else from `ATELIER_TRAINING_PHOTOS_DIR`. A warm start
begins from the installed style `ATELIER_TRAINING_WARM_START_STYLE`. A checkpoint is
kept in the job's blobs every `checkpoint_interval` steps and when the worker stops, so a job
whose worker died or was shut down continues from there on its next attempt.

On success the network is saved as a user style of the job's owner (fp16 safetensors in the
database, so every API host serves it), and the job's result is the fp32 `.pth` state dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from app.core.config import Settings
from app.core.progress import stop_if_asked
from app.imaging.decode import ImageRejected, decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.jobs.kinds.base import JobContext, JobKind, JobResult, ProgressUpdate
from app.jobs.models import BlobKind
from app.jobs.stored_inputs import JobInputError, decode_stored
from app.nets.transformer_net import TransformerNet
from app.styles.catalog import manifest_styles
from app.styles.thumbnails import reference_photo
from app.styles.user_styles import DuplicateStyle, NewUserStyle, UserStyleStore
from app.training import Progress, TrainOptions, train
from app.training.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes
from app.training.engine import stylize_array, to_batch
from app.weights.checkpoints import (
    CheckpointError,
    load_transformer_net,
    transformer_net_pth,
    transformer_net_safetensors,
)
from app.weights.manifest import ManifestError, load_manifest

log = logging.getLogger("atelier.jobs.training")

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif")
PTH_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class TrainingJobOptions:
    """The options column of a training job."""

    name: str
    title: str
    description: str
    train: TrainOptions

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "train": self.train.to_dict(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingJobOptions:
        return cls(
            name=str(data["name"]),
            title=str(data["title"]),
            description=str(data.get("description", "")),
            train=TrainOptions.from_dict(dict(data["train"])),
        )


def photo_folder_files(folder: Path | None) -> list[Path]:
    """The photos of the server's training folder, sorted so every worker reads the same order."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def load_photos(blobs: list[bytes], settings: Settings, label: str) -> list[np.ndarray]:
    """Decoded photos, shrunk to `training_photo_side`; unreadable ones fail naming which."""
    photos = []
    for index, data in enumerate(blobs):
        try:
            decoded = decode_image(
                data, max_pixels=settings.max_pixels, max_size=settings.training_photo_side
            )
        except ImageRejected as exc:
            raise JobInputError(f"{label} {index + 1} is unusable: {exc}") from exc
        photos.append(decoded.pixels)
    return photos


def warm_start_weights(settings: Settings) -> dict[str, Tensor] | None:
    """The weights a warm start begins from: the installed style the settings name, found
    through the models manifest like every served style. None, with a warning, when it is not
    installed or unreadable: a warm start only saves time, so training still runs, from random
    weights."""
    name = settings.training_warm_start_style
    try:
        styles = manifest_styles(load_manifest(settings.models_dir), settings.models_dir)
    except ManifestError as exc:
        log.warning("warm start unavailable, starting from random weights: %s", exc)
        return None
    style = next((s for s in styles if s.name == name and s.checkpoint is not None), None)
    if style is None or style.checkpoint is None:
        log.warning(
            "warm start style %r is not installed in %s; starting from random weights "
            "(ATELIER_TRAINING_WARM_START_STYLE)",
            name,
            settings.models_dir,
        )
        return None
    try:
        return load_transformer_net(style.checkpoint).state_dict()
    except CheckpointError as exc:
        log.warning("warm start style %r unusable, starting from random weights: %s", name, exc)
        return None


class TrainingKind(JobKind):
    name = "training"

    def run(self, context: JobContext) -> JobResult:
        try:
            options = TrainingJobOptions.from_json(context.job.options)
        except (KeyError, TypeError, ValueError) as exc:
            raise JobInputError(f"the stored options are invalid: {exc}") from exc
        painting = decode_stored(context, context.inputs(BlobKind.style), "painting")[0]
        photos = self._photos(context)
        backbone = context.backbone(options.train.backbone, preferred="vgg16")
        resume = None
        saved = context.load_checkpoint()
        if saved is not None:
            try:
                resume = checkpoint_from_bytes(saved)
            except ValueError as exc:
                log.warning("job %s: checkpoint unusable, starting over: %s", context.job.id, exc)

        def report(progress: Progress) -> None:
            speed = round(progress.images_per_s, 3)
            context.report(ProgressUpdate.of(progress, images_per_s=speed))

        start = warm_start_weights(context.settings) if options.train.warm_start else None
        result = train(
            photos,
            painting,
            options.train,
            backbone,
            start=start if resume is None else None,
            resume=resume,
            on_checkpoint=lambda c: context.save_checkpoint(checkpoint_to_bytes(c), c.iteration),
            probe=reference_photo(),
            on_progress=report,
            on_preview=context.save_preview,
            should_cancel=context.should_stop,
        )
        self._publish(context, options, result.net)
        return JobResult(transformer_net_pth(result.net), PTH_MEDIA_TYPE)

    @staticmethod
    def _photos(context: JobContext) -> list[np.ndarray]:
        uploaded = context.inputs(BlobKind.content)
        if uploaded:
            return load_photos(uploaded, context.settings, "uploaded photo")
        files = photo_folder_files(context.settings.training_photos_dir)
        if not files:
            raise JobInputError(
                "the job uploaded no photos and ATELIER_TRAINING_PHOTOS_DIR has none"
            )
        return load_photos([f.read_bytes() for f in files], context.settings, "folder photo")

    @staticmethod
    def _publish(context: JobContext, options: TrainingJobOptions, net: TransformerNet) -> None:
        """Save the network as its owner's style, unless the job was cancelled meanwhile."""
        stop_if_asked(context.should_stop)
        thumbnail = encode_image(
            stylize_array(net, to_batch(reference_photo())), OutputFormat.jpeg, quality=85
        )
        styles = UserStyleStore(context.database)
        try:
            styles.add(
                NewUserStyle(
                    name=options.name,
                    title=options.title,
                    description=options.description,
                    owner=context.job.owner,
                    thumbnail=thumbnail,
                    weights=transformer_net_safetensors(net),
                )
            )
        except DuplicateStyle as exc:
            raise JobInputError(
                f"you created a style named {options.name!r} while this job ran; "
                "submit again with another name"
            ) from exc
