"""What a job kind is: the plug-in point of the job machinery.

Leasing, heartbeats, cancellation, progress writes, previews, checkpoints, finishing and sweeping
are the same for every kind (app/jobs/execute.py); a kind only says how to turn its stored inputs
and options into a result. Kinds never touch the job row or the database directly: they read and
write through the `JobContext` they are given, so a kind runs unchanged under the embedded worker
and under Celery, and its writes stop counting the moment the job's lease is lost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from app.jobs.store import ProgressUpdate

if TYPE_CHECKING:
    import torch
    from sqlalchemy import Engine

    from app.core.config import Settings
    from app.jobs.models import BlobKind, Job
    from app.perceptual.backbones import Backbone


# A kind reports progress with the store's record of it (one shape from engine to client).
ProgressReport = ProgressUpdate


@dataclass(frozen=True)
class JobResult:
    """The finished job's output, stored as the job's result blob."""

    data: bytes
    media_type: str
    width: int | None = None
    height: int | None = None


class JobContext(Protocol):
    """Everything a running kind may use; implemented by the executor for one claimed job."""

    job: Job
    settings: Settings
    device: torch.device
    database: Engine  # the job database, for kinds that publish what they made (trained styles)

    def inputs(self, kind: BlobKind) -> list[bytes]:
        """The job's input blobs of one kind, in upload order."""
        ...

    def backbone(self, name: str, preferred: str = "vgg19") -> Backbone:
        """A frozen loss network, cached per process ("auto" resolves as load_backbone does);
        the job row records which one ran."""
        ...

    def report(self, progress: ProgressReport) -> None:
        """Record progress (throttled; the last step is always written)."""
        ...

    def save_preview(self, image: np.ndarray) -> None:
        """Show `image` (HxWx3 uint8) as the job's current preview."""
        ...

    def should_stop(self) -> bool:
        """True once the job was cancelled, the worker is shutting down or the lease was lost;
        a kind then raises `Cancelled` (app.gatys.optimize) at its next safe point."""
        ...

    def load_checkpoint(self) -> bytes | None:
        """The latest checkpoint a previous attempt of this job saved, if any."""
        ...

    def save_checkpoint(self, data: bytes, iteration: int) -> None:
        """Keep `data` so a later attempt resumes at `iteration` instead of 0."""
        ...

    def set_options(self, options: dict[str, Any]) -> None:
        """Rewrite the job's stored options (e.g. to record what the worker changed)."""
        ...


class JobKind(ABC):
    """One kind of job. `name` is stored on the row and names the Celery queue."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, context: JobContext) -> JobResult:
        """Do the work; raise Cancelled when `context.should_stop()` turns True, ValueError (or
        a subclass) for inputs that cannot work, which fail the job with that message."""


def queue_name(kind: str) -> str:
    """The Celery queue of a kind: operators scale each kind's workers apart."""
    return f"atelier.{kind}"
