"""Scale-out runner: a Celery worker that runs jobs the API announces over a Redis broker.

The broker only carries "job <id> is waiting"; the job row stays the source of truth. So a
duplicate or stale message is harmless (the claim fails and the task returns), and a worker that
is SIGKILLed mid-job is handled by leases, not by the broker: its job's lease lapses, a sweeper
(in every API process and every worker) requeues or fails it, and re-announces it.

Worker settings follow from one job at a time per process: the solo pool (no fork, so CUDA is
only ever initialised in the process that uses it), prefetch 1 so a busy worker does not hoard
messages, late acks so a message is only acknowledged once its job ended, and a visibility
timeout longer than any job so Redis does not redeliver a message whose job is still running.

Every broker socket has a timeout, so a broker that stops answering without closing the
connection (a hung Redis, a failover, a dropped route) is an error rather than a hang. The API
only publishes, while a client waits: its reads time out after 1 s and a publish is retried once
(on a fresh connection, which also recovers from a broker restart), so a down broker is a 503
within about 3 s. Workers wait on the broker for a living and get more slack.

Each job kind has its own queue (`atelier.gatys`, `atelier.training`, `atelier.video`), so
operators run and scale each kind's workers apart: `atelier worker --kind training`. On SIGTERM
(Celery's warm shutdown) a running job is told to stop at its next step: a training job saves a
checkpoint first, and the job is handed back to the queue at once rather than left to wait for
its lease to lapse.

Run with `atelier worker` or `python -m app.jobs.runners.celery_worker`; the plain Celery CLI
also works: `celery -A app.jobs.runners.celery_worker inspect active`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from celery import Celery, Task, bootsteps
from celery.signals import worker_shutting_down
from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings, get_settings
from app.core.device import configure_threads
from app.jobs.execute import execute_job
from app.jobs.kinds import KINDS, queue_name
from app.jobs.lease import make_worker_id
from app.jobs.models import JobState
from app.jobs.store import JobStore
from app.jobs.sweeper import LeaseSweeper

log = logging.getLogger("atelier.jobs.celery")

RUN_JOB = "atelier.run_job"
CLAIM_RETRY_S = 5  # the database was unreachable; try the claim again after this long
PRODUCER_SOCKET_TIMEOUT_S = 1.0  # a publish is one small LPUSH, answered in milliseconds
WORKER_SOCKET_TIMEOUT_S = 10.0  # well above kombu's 1 s BRPOP wait and its health-check PINGs
BROKER_CONNECT_TIMEOUT_S = 2.0


def create_celery_app(settings: Settings, *, producer_only: bool = False) -> Celery:
    """The Celery app for `settings.broker_url`: the API sends with it (`producer_only`, with
    the short timeouts a waiting client needs), workers run it."""
    if not settings.broker_url:
        raise ValueError("no broker configured; set ATELIER_BROKER_URL (e.g. redis://host:6379/0)")
    socket_timeout = PRODUCER_SOCKET_TIMEOUT_S if producer_only else WORKER_SOCKET_TIMEOUT_S
    app = Celery("atelier", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue_name("gatys"),
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_pool="solo",
        worker_concurrency=1,
        worker_prefetch_multiplier=1,
        # A busy solo worker must not sit on the next message while another worker idles.
        worker_disable_prefetch=True,
        worker_enable_remote_control=False,
        broker_transport_options={
            "visibility_timeout": settings.job_visibility_timeout_s,
            # Without these, kombu's Redis transport waits forever (None) on a silent broker.
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(socket_timeout, BROKER_CONNECT_TIMEOUT_S),
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Submitting a job must fail fast (503) rather than hang when the broker is down: one
        # immediate retry replaces a connection the broker dropped, then the error surfaces.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
    context = WorkerContext(settings, lambda job_id, kind: _announce(app, job_id, kind))

    @app.task(name=RUN_JOB, bind=True, ignore_result=True)
    def run_job(task: Task, job_id: str) -> str:
        try:
            return context.run(job_id)
        except SQLAlchemyError as exc:
            log.warning("job %s: database unavailable (%s); retrying", job_id, exc)
            raise task.retry(countdown=CLAIM_RETRY_S, max_retries=None) from exc

    class SweepLeases(bootsteps.StartStopStep):
        """Starts the lease sweeper with the worker, so a worker fleet needs no extra process."""

        def start(self, parent: Any) -> None:
            context.start()

        def stop(self, parent: Any) -> None:
            context.stop()

    app.steps["worker"].add(SweepLeases)
    return app


def _announce(app: Celery, job_id: str, kind: str) -> None:
    app.send_task(RUN_JOB, args=[job_id], queue=queue_name(kind))


class WorkerContext:
    """A worker process's long-lived parts; the store is built on first use so the API, which
    only sends tasks, never opens it through here."""

    def __init__(self, settings: Settings, dispatch: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.worker_id = make_worker_id("celery")
        self.dispatch = dispatch
        self.stopping = threading.Event()
        self._store: JobStore | None = None
        self._sweeper: LeaseSweeper | None = None
        worker_shutting_down.connect(self._on_shutdown, weak=False)

    def _on_shutdown(self, **_: Any) -> None:
        """SIGTERM/SIGINT: the running job stops at its next step and goes back to the queue."""
        self.stopping.set()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(self.settings.job_database_url)
        self._store.create_schema()
        return self._store

    def run(self, job_id: str) -> str:
        """Claim exactly this job and run it; anything else (already running elsewhere, done,
        cancelled) means the message is stale and is dropped."""
        settings = self.settings
        job = self.store.claim(self.worker_id, settings.job_lease_seconds, job_id=job_id)
        if job is None:
            log.info("job %s is not queued any more; message dropped", job_id)
            return "skipped"
        state = execute_job(self.store, job_id, self.worker_id, settings, stop=self.stopping)
        if state is JobState.queued:
            # Handed back while shutting down: this message is acked when the task returns, so
            # the job needs a fresh one for the next worker.
            self.dispatch(job_id, job.kind)
        return state.value if state is not None else "lost"

    def start(self) -> None:
        configure_threads(self.settings.torch_threads, self.settings.torch_interop_threads)
        self._sweeper = LeaseSweeper(
            self.store,
            max_attempts=self.settings.job_max_attempts,
            interval_s=self.settings.job_sweep_interval_s,
            on_requeued=self.dispatch,
        )
        try:
            self._sweeper.sweep()
        except SQLAlchemyError as exc:
            log.warning("start-up lease sweep failed (will retry): %s", exc)
        self._sweeper.start()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()


def start_worker(settings: Settings, kinds: Sequence[str] = tuple(KINDS)) -> None:
    """Run a worker for `kinds`' queues in this process until it is stopped (blocks)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown job kind(s) {unknown}; known: {', '.join(KINDS)}")
    app = create_celery_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            f"--queues={','.join(queue_name(kind) for kind in kinds)}",
            f"--hostname=atelier-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
        ]
    )


@lru_cache(maxsize=1)
def _default_app() -> Celery:
    return create_celery_app(get_settings())


def __getattr__(name: str) -> Celery:
    """`celery -A app.jobs.runners.celery_worker ...` (inspect, purge, worker) finds the app
    here, built from the ATELIER_* settings on first use rather than at import."""
    if name in ("app", "celery"):
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    settings = get_settings()
    if not settings.broker_url:
        print("error: no broker configured; set ATELIER_BROKER_URL", file=sys.stderr)
        raise SystemExit(2)
    start_worker(settings)


if __name__ == "__main__":
    main()
