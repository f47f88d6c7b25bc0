"""The sweeper: the only path that rescues jobs whose worker died, so nothing stays `running`.

It runs in every API process and every Celery worker. That is safe because each transition is a
conditional UPDATE that exactly one sweeper wins, and only the winner re-dispatches the job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.jobs.lease import holder_is_dead
from app.jobs.models import JobState
from app.jobs.store import JobStore, LeaseOutcome

log = logging.getLogger("atelier.jobs.sweeper")


class LeaseSweeper:
    """Periodically requeues (or fails, after `max_attempts`) jobs whose lease lapsed; calls
    `on_requeued(job_id, kind)` for each job put back in the queue so a runner picks it up. With a
    `retention`, it also deletes finished jobs (and their images) older than that."""

    def __init__(
        self,
        store: JobStore,
        *,
        max_attempts: int,
        interval_s: float,
        on_requeued: Callable[[str, str], None],
        retention: timedelta | None = None,
    ) -> None:
        self.store = store
        self.retention = retention
        self.max_attempts = max_attempts
        self.interval_s = interval_s
        self.on_requeued = on_requeued
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[LeaseOutcome]:
        """One pass: end the leases of holders known dead on this host, then settle every
        expired lease."""
        for job_id, owner in self.store.running_leases():
            if holder_is_dead(owner) and self.store.expire_lease(job_id, owner):
                log.info("job %s: its worker %s is gone", job_id, owner)
        outcomes = self.store.requeue_expired(self.max_attempts)
        for outcome in outcomes:
            log.warning("job %s: lease expired -> %s", outcome.job_id, outcome.state.value)
            if outcome.state is JobState.queued:
                try:
                    self.on_requeued(outcome.job_id, outcome.kind)
                except Exception:
                    log.exception("could not re-dispatch job %s", outcome.job_id)
        if self.retention is not None:
            purged = self.store.purge_finished(self.retention)
            if purged:
                log.info("removed %d finished jobs older than %s", purged, self.retention)
        return outcomes

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="lease-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except SQLAlchemyError as exc:
                log.warning("lease sweep failed (will retry): %s", exc)
