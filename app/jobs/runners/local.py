"""The embedded worker: threads of the API process that run queued jobs, one per job kind.

Each kind runs one job at a time, because one run already uses every core (or the whole GPU);
but kinds have their own thread, so an hour-long training job never blocks a Gatys job queued
behind it (both then share the machine). On shutdown a running job is handed back to the queue
(a training job after saving a checkpoint), so it continues when the service starts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings
from app.jobs.execute import BackboneCache, execute_job
from app.jobs.lease import make_worker_id
from app.jobs.models import JobState
from app.jobs.store import JobStore

log = logging.getLogger("atelier.jobs.local")

STOP_TIMEOUT_S = 30.0  # one engine evaluation at the largest size, with room to spare


class LocalRunner:
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        backbones: BackboneCache | None = None,
        on_finished: Callable[[JobState, float], None] | None = None,
        kinds: Collection[str] | None = None,
    ) -> None:
        """`kinds` limits this runner to those job kinds (default: any kind)."""
        self.store = store
        self.kinds = None if kinds is None else tuple(kinds)
        self.settings = settings
        self.backbones = backbones
        self.on_finished = on_finished
        self.worker_id = make_worker_id("local")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        name = f"job-runner-{'-'.join(self.kinds)}" if self.kinds else "job-runner"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop_soon(self) -> None:
        """Ask the running job to stop at its next step, without waiting for it."""
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        self.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning(
                    "job runner still busy after %.0f s; its lease will lapse", STOP_TIMEOUT_S
                )

    def _loop(self) -> None:
        settings = self.settings
        while not self._stop.is_set():
            self._wake.clear()
            try:
                job = self.store.claim(self.worker_id, settings.job_lease_seconds, kinds=self.kinds)
            except SQLAlchemyError as exc:
                log.warning("cannot claim jobs (will retry): %s", exc)
                job = None
            if job is None:
                self._wake.wait(settings.job_poll_interval_s)
                continue
            started = time.monotonic()
            try:
                state = execute_job(
                    self.store,
                    job.id,
                    self.worker_id,
                    settings,
                    stop=self._stop,
                    backbones=self.backbones,
                )
                if state is not None and self.on_finished is not None:
                    self.on_finished(state, time.monotonic() - started)
            except Exception:
                # The lease lapses and the sweeper requeues the job; the runner must live on.
                log.exception("job %s: runner error", job.id)
