"""JobStore: the state machine, atomic claims and lease expiry, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime

import pytest

from app.core.progress import ProgressUpdate
from app.jobs.lease import holder_is_dead, make_worker_id
from app.jobs.models import BlobKind, JobState, UTCDateTime
from app.jobs.store import JobNotFound, JobStore
from app.jobs.sweeper import LeaseSweeper

LEASE = 30.0


def progress(iteration: int, total: int = 8) -> ProgressUpdate:
    return ProgressUpdate(iteration, total, 1.0, 2.0, 0.5, 3.0)


def test_create_get_and_inputs(store: JobStore, helpers) -> None:
    styles = [helpers.png(32, 32, seed=5), helpers.png(40, 40, seed=6)]
    job = store.create(helpers.job(styles=styles))

    fetched = store.get(job.id)
    assert fetched.state is JobState.queued
    assert (fetched.attempts, fetched.iteration, fetched.total) == (0, 0, 8)
    assert fetched.options["iterations"] == 8 and fetched.style_count == 2
    assert fetched.created_at == store.clock()
    assert store.blobs(job.id, BlobKind.content) == [helpers.png(64, 48, seed=1)]
    assert store.blobs(job.id, BlobKind.style) == styles
    with pytest.raises(JobNotFound):
        store.get("0" * 32)


def test_success_path_and_illegal_transitions_after_it(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    claimed = store.claim("w1", LEASE)
    assert claimed is not None and claimed.id == job.id
    assert claimed.state is JobState.running and claimed.attempts == 1
    assert claimed.lease_owner == "w1"
    assert (claimed.lease_expires - store.clock()).total_seconds() == LEASE

    assert store.mark_started(job.id, "w1", backbone="efficientnet-lite0", device="cpu")
    assert store.update_progress(job.id, "w1", progress(4))
    assert store.save_preview(job.id, "w1", b"jpeg-1")
    assert store.save_preview(job.id, "w1", b"jpeg-2")
    running = store.get(job.id)
    assert (running.iteration, running.percent, running.eta_s) == (4, 50.0, 3.0)
    assert running.has_preview and store.blob(job.id, BlobKind.preview) == b"jpeg-2"

    assert store.finish(job.id, "w1", b"png", {"total_s": 1.5})
    done = store.get(job.id)
    assert done.state is JobState.succeeded
    assert done.timings == {"total_s": 1.5} and done.finished_at == store.clock()
    assert done.lease_owner is None and done.backbone == "efficientnet-lite0"
    assert store.blob(job.id, BlobKind.result) == b"png"

    # A finished job accepts no worker-side write and cannot be claimed or cancelled.
    assert not store.finish(job.id, "w1", b"other")
    assert not store.fail(job.id, "w1", "late failure")
    assert not store.mark_cancelled(job.id, "w1")
    assert not store.update_progress(job.id, "w1", progress(5))
    assert not store.renew_lease(job.id, "w1", LEASE)
    assert not store.release(job.id, "w1")
    assert store.claim("w2", LEASE, job_id=job.id) is None
    assert store.request_cancel(job.id).state is JobState.succeeded
    assert store.blob(job.id, BlobKind.result) == b"png"


def test_only_the_lease_holder_may_write(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    assert store.claim("w1", LEASE) is not None

    assert not store.update_progress(job.id, "intruder", progress(3))
    assert not store.save_preview(job.id, "intruder", b"x")
    assert not store.finish(job.id, "intruder", b"x")
    assert not store.fail(job.id, "intruder", "no")
    assert store.get(job.id).state is JobState.running
    assert store.should_stop(job.id, "intruder")
    assert not store.should_stop(job.id, "w1")


def test_queued_jobs_cannot_take_worker_writes(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    assert not store.finish(job.id, "w1", b"x")
    assert not store.update_progress(job.id, "w1", progress(1))
    assert not store.mark_started(job.id, "w1", backbone="b", device="cpu")
    assert store.get(job.id).state is JobState.queued


def test_cancel_queued_is_immediate_and_idempotent(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    first = store.request_cancel(job.id)
    assert first.state is JobState.cancelled and first.finished_at is not None
    again = store.request_cancel(job.id)
    assert again.state is JobState.cancelled and again.finished_at == first.finished_at
    assert store.claim("w1", LEASE) is None
    with pytest.raises(JobNotFound):
        store.request_cancel("f" * 32)


def test_cancel_running_flags_the_worker(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    flagged = store.request_cancel(job.id)
    assert flagged.state is JobState.running and flagged.cancel_requested
    assert store.request_cancel(job.id).cancel_requested
    assert store.should_stop(job.id, "w1")

    assert store.mark_cancelled(job.id, "w1", {"total_s": 0.2})
    assert store.get(job.id).state is JobState.cancelled
    assert store.request_cancel(job.id).state is JobState.cancelled
    assert not store.finish(job.id, "w1", b"x")


def test_fail_records_reason(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    assert store.fail(job.id, "w1", "the stored content image is unusable")
    failed = store.get(job.id)
    assert failed.state is JobState.failed
    assert failed.error == "the stored content image is unusable"
    assert store.claim("w1", LEASE) is None


def test_fail_unstarted_only_touches_queued_jobs(store: JobStore, helpers) -> None:
    queued = store.create(helpers.job())
    running = store.create(helpers.job())
    store.claim("w1", LEASE, job_id=running.id)
    assert store.fail_unstarted(queued.id, "broker down")
    assert not store.fail_unstarted(running.id, "broker down")
    assert store.get(queued.id).state is JobState.failed
    assert store.get(running.id).state is JobState.running


def test_claim_order_and_targeted_claims(store: JobStore, clock, helpers) -> None:
    first = store.create(helpers.job())
    clock.advance(1)
    second = store.create(helpers.job())
    clock.advance(1)
    third = store.create(helpers.job())

    assert store.claim("w1", LEASE, job_id=third.id).id == third.id
    assert store.claim("w2", LEASE, job_id=third.id) is None
    assert store.claim("w2", LEASE).id == first.id
    assert store.claim("w3", LEASE).id == second.id
    assert store.claim("w4", LEASE) is None


def test_expired_lease_requeues_then_fails_after_max_attempts(store: JobStore, clock, helpers):
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    store.update_progress(job.id, "w1", progress(5))
    store.save_preview(job.id, "w1", b"old preview")

    clock.advance(LEASE - 1)
    assert store.requeue_expired(max_attempts=2) == []
    assert store.renew_lease(job.id, "w1", LEASE)  # a live worker keeps its job
    clock.advance(LEASE - 1)
    assert store.requeue_expired(max_attempts=2) == []

    clock.advance(2)
    [outcome] = store.requeue_expired(max_attempts=2)
    assert (outcome.job_id, outcome.state) == (job.id, JobState.queued)
    requeued = store.get(job.id)
    assert requeued.state is JobState.queued and requeued.attempts == 1
    assert (requeued.iteration, requeued.content_loss, requeued.lease_owner) == (0, None, None)
    assert not requeued.has_preview and store.blob(job.id, BlobKind.preview) is None
    assert not store.renew_lease(job.id, "w1", LEASE)  # the dead worker's lease is gone

    second = store.claim("w2", LEASE)
    assert second is not None and second.attempts == 2
    assert not store.finish(job.id, "w1", b"stale")  # the first worker woke up too late

    clock.advance(LEASE + 1)
    [outcome] = store.requeue_expired(max_attempts=2)
    assert outcome.state is JobState.failed
    failed = store.get(job.id)
    assert failed.state is JobState.failed and failed.attempts == 2
    assert "stopped responding" in failed.error and "2 attempt" in failed.error
    assert store.requeue_expired(max_attempts=2) == []


def test_expired_lease_with_cancel_request_ends_cancelled(store: JobStore, clock, helpers):
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    store.request_cancel(job.id)
    clock.advance(LEASE + 1)
    [outcome] = store.requeue_expired(max_attempts=5)
    assert outcome.state is JobState.cancelled
    assert store.get(job.id).state is JobState.cancelled


def test_expire_lease_makes_the_next_sweep_act(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    assert store.running_leases() == [(job.id, "w1")]
    assert not store.expire_lease(job.id, "someone-else")
    assert store.expire_lease(job.id, "w1")
    assert [o.state for o in store.requeue_expired(max_attempts=3)] == [JobState.queued]


def test_a_requeued_job_shows_none_of_its_last_attempts_progress(store: JobStore, helpers):
    """A requeued video job must not keep showing the dead attempt's frame rate."""
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    last_attempt = ProgressUpdate(7, 10, 1.0, 2.0, 0.5, 3.0, metrics={"fps": 24.0})
    assert store.update_progress(job.id, "w1", last_attempt)
    assert store.get(job.id).metrics == {"fps": 24.0}
    assert store.expire_lease(job.id, "w1")
    assert [o.state for o in store.requeue_expired(max_attempts=3)] == [JobState.queued]
    requeued = store.get(job.id)
    assert requeued.iteration == 0
    assert (requeued.content_loss, requeued.style_loss, requeued.tv_loss) == (None, None, None)
    assert (requeued.eta_s, requeued.metrics) == (None, None)


def test_release_requeues_without_spending_an_attempt(store: JobStore, helpers) -> None:
    job = store.create(helpers.job())
    store.claim("w1", LEASE)
    store.update_progress(job.id, "w1", progress(3))
    assert store.release(job.id, "w1")
    released = store.get(job.id)
    assert released.state is JobState.queued
    assert (released.attempts, released.iteration) == (0, 0)
    assert store.claim("w2", LEASE).attempts == 1


def test_concurrent_claims_never_share_a_job(store: JobStore, helpers) -> None:
    job_count, worker_count = 12, 6
    for _ in range(job_count):
        store.create(helpers.job())
    claims: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(worker_count)
    lock = threading.Lock()

    def worker(name: str) -> None:
        try:
            barrier.wait()
            while (job := store.claim(name, LEASE)) is not None:
                with lock:
                    claims[job.id] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(worker_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(claims) == job_count and set(claims.values()) == {1}
    page = store.list_jobs(state=JobState.running, limit=100)
    assert page.total == job_count
    assert len({job.lease_owner for job in page.items}) >= 1


def test_list_paging_filters_and_pending_count(store: JobStore, clock, helpers) -> None:
    ids = []
    for index in range(5):
        ids.append(store.create(helpers.job(owner="alice" if index < 3 else "bob")).id)
        clock.advance(1)
    store.claim("w1", LEASE, job_id=ids[0])
    store.request_cancel(ids[1])

    page = store.list_jobs(limit=2, offset=0)
    assert page.total == 5 and [j.id for j in page.items] == [ids[4], ids[3]]
    assert [j.id for j in store.list_jobs(limit=2, offset=4).items] == [ids[0]]
    assert [j.id for j in store.list_jobs(state=JobState.queued).items] == [ids[4], ids[3], ids[2]]
    assert store.list_jobs(owner="alice", state=JobState.cancelled).total == 1
    assert store.count_pending("alice") == 2  # one running, one queued; the cancelled one is done
    assert store.count_pending("bob") == 2
    assert store.count_pending("carol") == 0


def test_timestamps_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UTCDateTime().process_bind_param(datetime(2030, 1, 1), dialect=None)  # type: ignore[arg-type]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_holder_is_dead_only_when_provable() -> None:
    host = socket.gethostname()
    assert holder_is_dead(f"{host}:{dead_pid()}:local-abc")
    assert not holder_is_dead(make_worker_id("local"))  # this very process
    assert not holder_is_dead(f"{host}:{os.getppid()}:local-abc")  # alive
    assert not holder_is_dead(f"elsewhere-{host}:{dead_pid()}:local-abc")  # cannot tell
    assert not holder_is_dead("not-a-worker-id")


def test_sweeper_requeues_a_dead_local_holder_without_waiting(store: JobStore, helpers) -> None:
    dead = store.create(helpers.job())
    alive = store.create(helpers.job())
    store.claim(f"{socket.gethostname()}:{dead_pid()}:local-x", LEASE, job_id=dead.id)
    store.claim(make_worker_id("local"), LEASE, job_id=alive.id)
    announced: list[tuple[str, str]] = []
    sweeper = LeaseSweeper(
        store,
        max_attempts=2,
        interval_s=60,
        on_requeued=lambda job_id, kind: announced.append((job_id, kind)),
    )

    outcomes = sweeper.sweep()

    assert [(o.job_id, o.state) for o in outcomes] == [(dead.id, JobState.queued)]
    assert announced == [(dead.id, "gatys")]
    assert store.get(alive.id).state is JobState.running
