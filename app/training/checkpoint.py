"""Training checkpoints: written atomically, read back with torch's weights-only unpickler."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.core.files import write_atomic
from app.training.photos import SamplerState


@dataclass(frozen=True)
class TrainingCheckpoint:
    """What a resumed run needs to continue exactly: weights, Adam moments, data position."""

    iteration: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    sampler: SamplerState
    options: dict[str, Any]
    backbone: str


def checkpoint_to_bytes(checkpoint: TrainingCheckpoint) -> bytes:
    payload = {
        "iteration": checkpoint.iteration,
        "model": checkpoint.model,
        "optimizer": checkpoint.optimizer,
        "sampler": checkpoint.sampler.to_dict(),
        "options": checkpoint.options,
        "backbone": checkpoint.backbone,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(data: bytes) -> TrainingCheckpoint:
    """Raises ValueError for anything that is not a checkpoint this code wrote."""
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return TrainingCheckpoint(
            iteration=int(raw["iteration"]),
            model=raw["model"],
            optimizer=raw["optimizer"],
            sampler=SamplerState.from_dict(raw["sampler"]),
            options=dict(raw["options"]),
            backbone=str(raw["backbone"]),
        )
    except Exception as exc:  # the weights-only unpickler raises many types on foreign data
        raise ValueError(f"not a training checkpoint: {exc}") from exc


def save_checkpoint(path: Path, checkpoint: TrainingCheckpoint) -> None:
    """Atomic, so a crash mid-write never leaves a torn file."""
    write_atomic(path, checkpoint_to_bytes(checkpoint))


def load_checkpoint(path: Path) -> TrainingCheckpoint:
    return checkpoint_from_bytes(path.read_bytes())
