"""Leases: who holds a running job, keeping the hold alive, and spotting holders that died.

A worker proves it is alive by renewing its job's lease every third of the lease length, so a
missed renewal or two (a slow database, a long GC pause) does not cost the job. A worker id names
the host and process, which lets a process on the same host tell at once that a holder is dead
instead of waiting out the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError

from app.jobs.store import JobStore

log = logging.getLogger("atelier.jobs.lease")

RENEWALS_PER_LEASE = 3


def make_worker_id(kind: str) -> str:
    """`host:pid:kind-token`; the token keeps ids unique when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{kind}-{uuid.uuid4().hex[:8]}"


def holder_is_dead(worker_id: str) -> bool:
    """True only when the holder provably ran on this host in a process that no longer exists;
    anything uncertain (other host, odd id, pid alive or reused) waits for the lease to lapse."""
    host, _, rest = worker_id.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseKeeper:
    """Renews one job's lease on a background thread while the job runs; `lost` is set when the
    store says the lease is gone, and the job must then stop without writing."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str, lease_seconds: float) -> None:
        self.store = store
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{job_id[:8]}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_seconds)

    def _renew_until_stopped(self) -> None:
        interval = self.lease_seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                held = self.store.renew_lease(self.job_id, self.worker_id, self.lease_seconds)
            except SQLAlchemyError as exc:
                log.warning("could not renew the lease of job %s: %s", self.job_id, exc)
                continue
            if not held:
                log.warning("job %s: lease lost; another worker may run it", self.job_id)
                self.lost.set()
                return
