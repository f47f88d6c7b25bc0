"""execute_job: run one claimed job of any kind to an end state, the same way under every runner.

Everything a client sees goes through the job row: progress (throttled to one write per
`PROGRESS_INTERVAL_S`, plus the last step), previews, checkpoints, the result, and a readable
reason when anything goes wrong. Cancellation comes back the same way: the row's flag is read at
most every `CANCEL_CHECK_S`, so a cancel takes effect within about one step of the engine. What
the work is belongs to the job's kind (app/jobs/kinds/); this module is the same for all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings
from app.core.device import select_device
from app.gatys.optimize import Cancelled
from app.imaging.encode import OutputFormat, encode_image
from app.jobs.kinds import UnknownJobKind, get_kind
from app.jobs.kinds.base import ProgressReport
from app.jobs.lease import LeaseKeeper
from app.jobs.memory import JobOutOfMemory, is_out_of_memory
from app.jobs.models import BlobKind, Job, JobState
from app.jobs.store import JobStore
from app.jobs.stored_inputs import JobInputError
from app.observability.logs import job_id_var
from app.observability.paths import without_paths
from app.perceptual.backbones import Backbone, BackboneUnavailable, load_backbone

log = logging.getLogger("atelier.jobs.execute")

PROGRESS_INTERVAL_S = 0.5
CANCEL_CHECK_S = 0.5
PREVIEW_QUALITY = 85


class _LeaseLost(Exception):
    """The job stopped being ours while it ran."""


class BackboneCache:
    """Backbones by (name, preference, models dir, device); loading VGG takes seconds, so each
    process loads each backbone once and every later job reuses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str, str, str], Backbone] = {}

    def get(
        self,
        name: str,
        models_dir: Path,
        device: torch.device,
        preferred: str = "vgg19",
        cache_dir: Path | None = None,
    ) -> Backbone:
        key = (name, preferred, str(Path(models_dir).resolve()), str(device))
        with self._lock:
            if key not in self._items:
                self._items[key] = load_backbone(name, models_dir, device, preferred, cache_dir)
            return self._items[key]


BACKBONES = BackboneCache()


def execute_job(
    store: JobStore,
    job_id: str,
    worker_id: str,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    backbones: BackboneCache | None = None,
) -> JobState | None:
    """Run a job `worker_id` has claimed; returns its end state, or None when the job turned
    out not to be ours (lease lost). Setting `stop` hands the job back to the queue."""
    job = store.get(job_id)
    if job.state is not JobState.running or job.lease_owner != worker_id:
        log.info("job %s is %s under %s, not ours to run", job_id, job.state, job.lease_owner)
        return None
    token = job_id_var.set(job_id)
    try:
        with LeaseKeeper(store, job_id, worker_id, settings.job_lease_seconds) as lease:
            context = _Context(
                store, job, worker_id, settings, stop or threading.Event(), lease.lost,
                backbones or BACKBONES,
            )  # fmt: skip
            return context.execute()
    finally:
        job_id_var.reset(token)


class _Context:
    """One claimed job as its kind sees it (the JobContext protocol), and the run around it."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        settings: Settings,
        stop: threading.Event,
        lease_lost: threading.Event,
        backbones: BackboneCache,
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.settings = settings
        self.stop = stop
        self.device = torch.device("cpu")
        self.database = store.engine
        self._backbones = backbones
        self._backbone_name: str | None = None
        self._writer = _ProgressWriter(store, job.id, worker_id)
        self._stop_check = _StopCheck(store, job.id, worker_id, stop, lease_lost)
        self.timings: dict[str, float] = {}
        if job.started_at is not None:
            self.timings["queued_s"] = round((job.started_at - job.created_at).total_seconds(), 3)

    # --- the JobContext protocol ----------------------------------------------------------------

    def inputs(self, kind: BlobKind) -> list[bytes]:
        return self.store.blobs(self.job.id, kind)

    def backbone(self, name: str, preferred: str = "vgg19") -> Backbone:
        network = self._backbones.get(
            name, self.settings.models_dir, self.device, preferred, self.settings.cache_dir
        )
        if not self.store.mark_started(
            self.job.id, self.worker_id, backbone=network.name, device=str(self.device)
        ):
            raise _LeaseLost
        return network

    def report(self, progress: ProgressReport) -> None:
        self._writer(progress)

    def save_preview(self, image: np.ndarray) -> None:
        try:
            jpeg = encode_image(image, OutputFormat.jpeg, quality=PREVIEW_QUALITY)
            size = (image.shape[1], image.shape[0])
            self.store.save_preview(self.job.id, self.worker_id, jpeg, size)
        except SQLAlchemyError as exc:
            log.warning("job %s: preview not saved: %s", self.job.id, exc)

    def should_stop(self) -> bool:
        return self._stop_check()

    def load_checkpoint(self) -> bytes | None:
        return self.store.blob(self.job.id, BlobKind.checkpoint)

    def save_checkpoint(self, data: bytes, iteration: int) -> None:
        try:
            self.store.save_checkpoint(self.job.id, self.worker_id, data, iteration)
        except SQLAlchemyError as exc:
            log.warning("job %s: checkpoint not saved: %s", self.job.id, exc)

    def set_options(self, options: dict[str, Any]) -> None:
        if not self.store.set_options(self.job.id, self.worker_id, options):
            raise _LeaseLost

    # --- the run --------------------------------------------------------------------------------

    def execute(self) -> JobState | None:
        started = time.perf_counter()
        job_id, worker_id = self.job.id, self.worker_id
        try:
            kind = get_kind(self.job.kind)
            self.device = select_device(self.settings.device)
            if not self.store.mark_started(
                job_id, worker_id, backbone=self.job.backbone, device=str(self.device)
            ):
                return None
            result = kind.run(self)
            self._writer.flush()
            self._lap("run_s", started)
            self._lap("total_s", started)
            size = (result.width, result.height) if result.width and result.height else None
            if self.store.finish(
                job_id, worker_id, result.data, self.timings,
                media_type=result.media_type, size=size,
            ):  # fmt: skip
                log.info("job %s succeeded in %.1f s", job_id, self.timings["total_s"])
                return JobState.succeeded
            # A cancel that arrived during the last step wins over the result.
            return self._stopped()
        except (Cancelled, _LeaseLost):
            self._lap("total_s", started)
            return self._stopped()
        except Exception as exc:
            self._lap("total_s", started)
            reason = self._describe(exc)
            log.warning("job %s failed: %s", job_id, reason, exc_info=not _expected(exc))
            # The log keeps the details; what the client reads names no server path.
            failed = self.store.fail(job_id, worker_id, without_paths(reason), self.timings)
            return JobState.failed if failed else None

    def _stopped(self) -> JobState | None:
        """The engine stopped early: a user cancel, a shutdown, or a lost lease."""
        job = self.store.get(self.job.id)
        if job.state is not JobState.running or job.lease_owner != self.worker_id:
            return None
        if job.cancel_requested:
            if self.store.mark_cancelled(job.id, self.worker_id, self.timings):
                log.info("job %s cancelled at iteration %d", job.id, job.iteration)
                return JobState.cancelled
            return None
        if self.stop.is_set() and self.store.release(job.id, self.worker_id):
            log.info("job %s handed back to the queue (worker stopping)", job.id)
            return JobState.queued
        return None

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, JobInputError | JobOutOfMemory | UnknownJobKind):
            return str(exc)
        if isinstance(exc, BackboneUnavailable):
            return f"backbone unavailable: {exc}"
        if is_out_of_memory(exc):
            return (
                f"out of memory on {self.device}; retry with a smaller size or fewer inputs ({exc})"
            )
        if isinstance(exc, ValueError):
            return f"the job cannot run: {exc}"
        return f"internal error ({type(exc).__name__}): {exc}"

    def _lap(self, name: str, since: float) -> None:
        self.timings[name] = round(time.perf_counter() - since, 3)


def _expected(exc: Exception) -> bool:
    """Failures caused by the job itself; anything else deserves a traceback in the log."""
    return isinstance(
        exc, JobInputError | JobOutOfMemory | BackboneUnavailable | UnknownJobKind | ValueError
    )


class _ProgressWriter:
    """Writes progress at most every PROGRESS_INTERVAL_S, and always the last step."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.worker_id = worker_id
        self._written_at = float("-inf")
        self._pending: ProgressReport | None = None

    def __call__(self, progress: ProgressReport) -> None:
        now = time.monotonic()
        if progress.iteration < progress.total and now - self._written_at < PROGRESS_INTERVAL_S:
            self._pending = progress
            return
        self._write(progress)
        self._written_at = now

    def flush(self) -> None:
        if self._pending is not None:
            self._write(self._pending)

    def _write(self, progress: ProgressReport) -> None:
        self._pending = None
        try:
            self.store.update_progress(self.job_id, self.worker_id, progress)
        except SQLAlchemyError as exc:
            log.warning("job %s: progress not saved: %s", self.job_id, exc)


class _StopCheck:
    """The engine's `should_cancel`: local flags every call, the job row at most every
    CANCEL_CHECK_S so a fast engine does not hammer the database."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        worker_id: str,
        stop: threading.Event,
        lease_lost: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.worker_id = worker_id
        self.stop = stop
        self.lease_lost = lease_lost
        self.clock = clock
        self._checked_at = float("-inf")
        self._wanted = False

    def __call__(self) -> bool:
        if self.stop.is_set() or self.lease_lost.is_set():
            return True
        now = self.clock()
        if now - self._checked_at >= CANCEL_CHECK_S:
            self._checked_at = now
            try:
                self._wanted = self.store.should_stop(self.job_id, self.worker_id)
            except SQLAlchemyError as exc:
                log.warning("job %s: cancel flag unreadable: %s", self.job_id, exc)
        return self._wanted
