"""The job side of an API process: the store, how new jobs reach a runner, and the sweeper.

One object per deployment shape: with a broker, new and requeued jobs are announced to Celery
workers; without one (or with `embedded_worker` on) a thread of this process runs them. Either
way this process sweeps expired leases, so a job never stays `running` after its worker died.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings
from app.jobs.kinds import KINDS, queue_name
from app.jobs.models import JobState
from app.jobs.runners.celery_worker import RUN_JOB, create_celery_app
from app.jobs.runners.local import LocalRunner
from app.jobs.store import JobStore
from app.jobs.style_networks import StyleNetworks
from app.jobs.sweeper import LeaseSweeper
from app.serving.service import Service

log = logging.getLogger("atelier.jobs")


class JobsRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        style_service: Service | None = None,
        on_job_finished: Callable[[JobState, float], None] | None = None,
    ) -> None:
        """`style_service`: this process's loaded networks, lent to embedded video jobs."""
        self.settings = settings
        self.store = JobStore(settings.job_database_url)
        self.celery = (
            create_celery_app(settings, producer_only=True) if settings.broker_url else None
        )
        networks = StyleNetworks(lent=style_service)
        # One embedded runner per kind, so a long job of one kind never blocks another kind.
        self.runners = (
            [
                LocalRunner(
                    self.store,
                    settings,
                    networks=networks,
                    on_finished=on_job_finished,
                    kinds=[kind],
                )
                for kind in KINDS
            ]
            if settings.runs_embedded_worker
            else []
        )
        self.sweeper = LeaseSweeper(
            self.store,
            max_attempts=settings.job_max_attempts,
            interval_s=settings.job_sweep_interval_s,
            on_requeued=self.announce,
            retention=settings.job_retention,
        )

    def start(self) -> None:
        """Create tables and settle jobs a dead process left running, then start the threads.

        A database that is down now must not stop the API from serving instant predictions:
        job routes answer 503 and the threads retry until it is back.
        """
        try:
            self.store.create_schema()
            self.sweeper.sweep()
        except SQLAlchemyError as exc:
            log.error("job database unavailable at start-up (will retry): %s", exc)
        for runner in self.runners:
            runner.start()
        self.sweeper.start()

    def announce(self, job_id: str, kind: str) -> None:
        """Tell the runners a job is queued, on its kind's queue; raises when the broker cannot
        take the message."""
        if self.celery is not None:
            self.celery.send_task(RUN_JOB, args=[job_id], queue=queue_name(kind))
        for runner in self.runners:
            if runner.kinds is None or kind in runner.kinds:
                runner.wake()

    def stop(self) -> None:
        self.sweeper.stop()
        for runner in self.runners:
            runner.stop_soon()
        for runner in self.runners:
            runner.stop()
        self.store.dispose()
