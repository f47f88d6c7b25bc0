"""execute_job: run one claimed job to an end state, the same way under every runner.

Everything a client sees goes through the job row: progress (throttled to one write per
`PROGRESS_INTERVAL_S`, plus the last iteration), previews, the result, and a readable reason when
anything goes wrong. Cancellation comes back the same way: the row's flag is read at most every
`CANCEL_CHECK_S`, so a cancel takes effect within about one evaluation of the engine.

A run that runs out of memory fails with the size it was at; when the client allowed it
(`allow_downscale`), it is first retried once at `DOWNSCALE_FACTOR` times the size, and the job's
options say so (`downscaled_to`). The engine knows nothing of this: it is just called again.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.gatys.backbones import Backbone, BackboneUnavailable, load_backbone
from app.gatys.optimize import Cancelled, GatysOptions, Progress, run
from app.imaging.decode import ImageRejected, decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.inference.device import select_device
from app.jobs.lease import LeaseKeeper
from app.jobs.models import Job, JobState
from app.jobs.options import JobOptions, downscaled, options_from_json
from app.jobs.store import JobStore, ProgressUpdate
from app.observability.logs import job_id_var

log = logging.getLogger("atelier.jobs.execute")

PROGRESS_INTERVAL_S = 0.5
CANCEL_CHECK_S = 0.5
PREVIEW_QUALITY = 85


class JobInputError(ValueError):
    """A stored input image that cannot be used."""


class JobOutOfMemory(Exception):
    """The engine ran out of memory, with no (further) smaller retry allowed; the message is
    the job's readable reason."""


class _LeaseLost(Exception):
    """The job stopped being ours between two engine runs."""


class BackboneCache:
    """Backbones by (name, models dir, device); loading VGG-19 takes seconds, so each process
    loads each backbone once and every later job reuses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str, str], Backbone] = {}

    def get(self, name: str, models_dir: Path, device: torch.device) -> Backbone:
        key = (name, str(Path(models_dir).resolve()), str(device))
        with self._lock:
            if key not in self._items:
                self._items[key] = load_backbone(name, models_dir, device)
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
    execution = _Execution(store, job, worker_id, settings, stop or threading.Event())
    token = job_id_var.set(job_id)
    try:
        with LeaseKeeper(store, job_id, worker_id, settings.job_lease_seconds) as lease:
            return execution.run(backbones or BACKBONES, lease.lost)
    finally:
        job_id_var.reset(token)


class _Execution:
    def __init__(
        self,
        store: JobStore,
        job: Job,
        worker_id: str,
        settings: Settings,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.settings = settings
        self.stop = stop
        self.device = "unknown device"
        self.timings: dict[str, float] = {}
        if job.started_at is not None:
            self.timings["queued_s"] = round((job.started_at - job.created_at).total_seconds(), 3)

    def run(self, backbones: BackboneCache, lease_lost: threading.Event) -> JobState | None:
        started = time.perf_counter()
        job_id, worker_id = self.job.id, self.worker_id
        try:
            content, styles, options = self._inputs()
            device = select_device(self.settings.device)
            self.device = str(device)
            backbone = backbones.get(
                self.job.backbone or self.settings.job_backbone, self.settings.models_dir, device
            )
            self.store.mark_started(job_id, worker_id, backbone=backbone.name, device=self.device)
            self._lap("load_s", started)
            optimising = time.perf_counter()
            writer = _ProgressWriter(self.store, job_id, worker_id)
            stop_check = _StopCheck(self.store, job_id, worker_id, self.stop, lease_lost)

            def engine(gatys: GatysOptions) -> np.ndarray:
                return run(
                    content,
                    styles,
                    gatys,
                    backbone,
                    device=device,
                    on_progress=writer,
                    on_preview=self._save_preview,
                    should_cancel=stop_check,
                )

            image = self._optimise(options, engine, device)
            writer.flush()
            self._lap("optimize_s", optimising)
            png = encode_image(image, OutputFormat.png)
            self._lap("total_s", started)
            if self.store.finish(job_id, worker_id, png, self.timings):
                log.info("job %s succeeded in %.1f s", job_id, self.timings["total_s"])
                return JobState.succeeded
            # A cancel that arrived during the last iteration wins over the result.
            return self._stopped()
        except (Cancelled, _LeaseLost):
            self._lap("total_s", started)
            return self._stopped()
        except Exception as exc:
            self._lap("total_s", started)
            reason = self._describe(exc)
            log.warning("job %s failed: %s", job_id, reason, exc_info=not _expected(exc))
            failed = self.store.fail(job_id, worker_id, reason, self.timings)
            return JobState.failed if failed else None

    def _optimise(
        self,
        options: JobOptions,
        engine: Callable[[GatysOptions], np.ndarray],
        device: torch.device,
    ) -> np.ndarray:
        """Run the engine; after running out of memory, once more at a smaller size when the
        client allowed it and this job has not been downscaled yet."""
        first = options.effective
        try:
            return engine(first)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            kind = _memory_kind(exc)
            log.warning("job %s: out of %s at %d px: %s", self.job.id, kind, first.output_size, exc)
            if options.downscaled_to is not None:
                raise JobOutOfMemory(
                    _after_downscale(kind, first.output_size, options.gatys.output_size)
                ) from exc
            if not options.allow_downscale:
                raise JobOutOfMemory(
                    f"out of {kind} at {first.output_size} px; retry with a smaller size or "
                    "allow_downscale=true"
                ) from exc
            smaller = downscaled(first)
            if smaller is None:
                raise JobOutOfMemory(
                    f"out of {kind} at {first.output_size} px, the smallest size; retry with "
                    "fewer style images or a smaller style_scale"
                ) from exc
        # Outside the except block, so the failed run's frames (and tensors) can be freed.
        _release_memory(device)
        noted = {**self.job.options, "downscaled_to": smaller.output_size}
        if not self.store.set_options(self.job.id, self.worker_id, noted):
            raise _LeaseLost
        log.info("job %s: retrying at %d px", self.job.id, smaller.output_size)
        try:
            return engine(smaller)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            raise JobOutOfMemory(
                _after_downscale(_memory_kind(exc), smaller.output_size, first.output_size)
            ) from exc

    def _inputs(self) -> tuple[np.ndarray, list[np.ndarray], JobOptions]:
        inputs = self.store.inputs(self.job.id)
        content = self._decode(inputs.content, "content image")
        styles = [
            self._decode(data, f"style image {index + 1}")
            for index, data in enumerate(inputs.styles)
        ]
        if not styles:
            raise JobInputError("the job has no style image")
        try:
            options = options_from_json(self.job.options)
        except (TypeError, ValueError) as exc:
            raise JobInputError(f"the stored options are invalid: {exc}") from exc
        return content, styles, options

    def _decode(self, data: bytes, label: str) -> np.ndarray:
        try:
            return decode_image(data, max_pixels=self.settings.max_pixels).pixels
        except ImageRejected as exc:
            raise JobInputError(f"the stored {label} is unusable: {exc}") from exc

    def _save_preview(self, image: np.ndarray) -> None:
        try:
            jpeg = encode_image(image, OutputFormat.jpeg, quality=PREVIEW_QUALITY)
            self.store.save_preview(self.job.id, self.worker_id, jpeg)
        except SQLAlchemyError as exc:
            log.warning("job %s: preview not saved: %s", self.job.id, exc)

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
        if isinstance(exc, JobInputError | JobOutOfMemory):
            return str(exc)
        if isinstance(exc, BackboneUnavailable):
            return f"backbone unavailable: {exc}"
        if isinstance(exc, torch.OutOfMemoryError | MemoryError):
            return (
                f"out of memory on {self.device}; retry with a smaller size, fewer scales or "
                f"fewer style images ({exc})"
            )
        if isinstance(exc, ValueError):
            return f"the job cannot run: {exc}"
        return f"internal error ({type(exc).__name__}): {exc}"

    def _lap(self, name: str, since: float) -> None:
        self.timings[name] = round(time.perf_counter() - since, 3)


def _expected(exc: Exception) -> bool:
    """Failures caused by the job itself; anything else deserves a traceback in the log."""
    return isinstance(exc, JobInputError | JobOutOfMemory | BackboneUnavailable | ValueError)


def _is_out_of_memory(exc: Exception) -> bool:
    """Accelerator OOM (torch.OutOfMemoryError, which torch.cuda.OutOfMemoryError is), host
    MemoryError, and torch's CPU allocator failure, which is a plain RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _memory_kind(exc: Exception) -> str:
    return "GPU memory" if isinstance(exc, torch.OutOfMemoryError) else "memory"


def _after_downscale(kind: str, size: int, original: int) -> str:
    return (
        f"out of {kind} at {size} px, even after downscaling from {original} px; retry with a "
        "smaller size, fewer scales or fewer style images"
    )


def _release_memory(device: torch.device) -> None:
    """Give back what the failed run held before running again on the same device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _ProgressWriter:
    """Writes progress at most every PROGRESS_INTERVAL_S, and always the last iteration."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.worker_id = worker_id
        self._written_at = float("-inf")
        self._pending: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.iteration < progress.total and now - self._written_at < PROGRESS_INTERVAL_S:
            self._pending = progress
            return
        self._write(progress)
        self._written_at = now

    def flush(self) -> None:
        if self._pending is not None:
            self._write(self._pending)

    def _write(self, progress: Progress) -> None:
        self._pending = None
        update = ProgressUpdate(
            iteration=progress.iteration,
            total=progress.total,
            content_loss=progress.content_loss,
            style_loss=progress.style_loss,
            tv_loss=progress.tv_loss,
            eta_s=progress.eta_s,
        )
        try:
            self.store.update_progress(self.job_id, self.worker_id, update)
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
