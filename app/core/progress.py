"""What every long-running engine shares with the job machinery: how it stops and what it reports.

Gatys, training and video engines raise `Cancelled` at their next safe point once asked to stop,
and every job kind reports a `ProgressUpdate`; the job store keeps exactly its fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol


class Cancelled(Exception):
    """The caller's stop check returned True; raised at the engine's next safe point."""


def stop_if_asked(should_cancel: Callable[[], bool] | None) -> None:
    """A safe point: raise Cancelled when the caller's stop check (if any) says so."""
    if should_cancel is not None and should_cancel():
        raise Cancelled


class EngineProgress(Protocol):
    """What every loss-driven engine's progress report has (app.gatys and app.training do)."""

    iteration: int
    total: int
    content_loss: float
    style_loss: float
    tv_loss: float
    eta_s: float | None


@dataclass(frozen=True)
class ProgressUpdate:
    """One progress step as a client sees it.

    `iteration` counts the kind's own unit of work out of `total`: objective evaluations for
    Gatys, optimiser steps for training, frames for video. Losses are set by the loss-driven
    kinds; `metrics` holds kind-specific numbers (images_per_s for training, fps for video).
    """

    iteration: int
    total: int
    content_loss: float | None = None
    style_loss: float | None = None
    tv_loss: float | None = None
    eta_s: float | None = None
    metrics: dict[str, float] | None = None

    @classmethod
    def of(cls, progress: EngineProgress, **metrics: float) -> ProgressUpdate:
        return cls(
            iteration=progress.iteration,
            total=progress.total,
            content_loss=progress.content_loss,
            style_loss=progress.style_loss,
            tv_loss=progress.tv_loss,
            eta_s=progress.eta_s,
            metrics=metrics or None,
        )

    def columns(self) -> dict[str, Any]:
        """The job row's progress columns, as this step sets them."""
        return asdict(self) | {"metrics": self.metrics or None}

    @staticmethod
    def cleared_columns() -> dict[str, None]:
        """Every per-attempt progress column emptied (the counters are the store's business)."""
        return {name: None for name in PROGRESS_FIELDS if name not in ("iteration", "total")}


# The job row's progress columns, which the API shows as they are.
PROGRESS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ProgressUpdate))
