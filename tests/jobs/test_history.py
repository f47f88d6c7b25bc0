"""Loss history: thinning to a bounded number of points, storage on SQLite and PostgreSQL
(owned writes, incremental reads, a resumed run redrawing its tail, purge), and the worker
recording a real job's curve."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.config import Settings
from app.jobs.execute import execute_job
from app.jobs.history import MAX_POINTS, HistoryPoint, HistorySampler, bucket_size
from app.jobs.models import JobState
from app.jobs.store import JobStore

WORKER = "w1"


def point(step: int, loss: float = 1.0) -> HistoryPoint:
    return HistoryPoint(step, loss, 2 * loss, 0.5 * loss)


def claimed(store: JobStore, helpers) -> str:
    job = store.create(helpers.job())
    assert store.claim(WORKER, 60.0) is not None
    return job.id


def test_a_short_job_keeps_every_step() -> None:
    sampler = HistorySampler()
    points = [sampler.add(step, 3, (step, 10.0 * step, 0.1)) for step in (1, 2, 3)]
    assert points == [
        HistoryPoint(1, 1.0, 10.0, 0.1),
        HistoryPoint(2, 2.0, 20.0, 0.1),
        HistoryPoint(3, 3.0, 30.0, 0.1),
    ]
    assert points[2] is not None and points[2].total_loss == pytest.approx(33.1)


def test_a_long_job_is_averaged_into_at_most_max_points_and_ends_on_its_last_step() -> None:
    sampler = HistorySampler(max_points=4)
    total = 10  # buckets of ceil(10 / 4) = 3 steps: 3, 6, 9, then the last step 10 alone
    points = [p for step in range(1, total + 1) if (p := sampler.add(step, total, (step, 0, 0)))]
    assert [p.step for p in points] == [3, 6, 9, 10]
    # Means of 1..3, 4..6, 7..9 and 10, by hand.
    assert [p.content_loss for p in points] == [2.0, 5.0, 8.0, 10.0]
    assert bucket_size(20_000) == 40 and 20_000 / bucket_size(20_000) <= MAX_POINTS


def test_steps_without_finite_losses_are_not_points() -> None:
    sampler = HistorySampler()
    assert sampler.add(1, 2, (None, None, None)) is None
    assert sampler.add(2, 2, (float("nan"), 1.0, 1.0)) is None


def test_points_are_stored_and_read_incrementally(store: JobStore, helpers) -> None:
    job_id = claimed(store, helpers)
    assert store.append_history(job_id, WORKER, [point(1), point(2, 0.5)])
    assert store.append_history(job_id, WORKER, [point(3, 0.25)])
    assert store.history(job_id) == [point(1), point(2, 0.5), point(3, 0.25)]
    assert store.history(job_id, after=2) == [point(3, 0.25)]
    assert store.history(job_id, after=3) == []


def test_only_the_lease_holder_writes_history(store: JobStore, helpers) -> None:
    job_id = claimed(store, helpers)
    assert not store.append_history(job_id, "intruder", [point(1)])
    assert store.history(job_id) == []


def test_a_resumed_run_replaces_the_points_past_where_it_resumed(store: JobStore, helpers) -> None:
    job_id = claimed(store, helpers)
    store.append_history(job_id, WORKER, [point(1), point(2), point(3), point(4)])
    # The next attempt resumed from a checkpoint at step 2 and reports step 3 again.
    store.append_history(job_id, WORKER, [point(3, 9.0)])
    assert store.history(job_id) == [point(1), point(2), point(3, 9.0)]


def test_purging_a_finished_job_deletes_its_history(store: JobStore, helpers, clock) -> None:
    job_id = claimed(store, helpers)
    store.append_history(job_id, WORKER, [point(1)])
    assert store.finish(job_id, WORKER, b"png")
    clock.advance(3600)
    assert store.purge_finished(timedelta(minutes=1)) == 1
    with store.engine.connect() as connection:
        left = connection.execute(sa.text("SELECT count(*) FROM atelier_job_history")).scalar()
    assert left == 0


def test_the_worker_records_a_gatys_jobs_curve(
    sqlite_store: JobStore, tmp_path: Path, helpers
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", models_dir=tmp_path / "models",
        gatys_backbone="efficientnet-lite0",
    )  # fmt: skip
    job_id = claimed(sqlite_store, helpers)
    assert execute_job(sqlite_store, job_id, WORKER, settings) is JobState.succeeded
    job = sqlite_store.get(job_id)
    history = sqlite_store.history(job_id)
    assert [p.step for p in history] == list(range(1, job.total + 1))
    # The last point is the last step's losses, which the job row recorded on its own path.
    last = history[-1]
    assert (last.content_loss, last.style_loss, last.tv_loss) == pytest.approx(
        (job.content_loss, job.style_loss, job.tv_loss)
    )
