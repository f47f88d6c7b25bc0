"""Scale-out for real: the API in this process, Celery workers as subprocesses, Redis between
them and PostgreSQL as the job table. Short leases (3 s) keep the dead-worker paths quick.

Only Redis database `REDIS_DB` is used (flushed before and after) and a schema of our own in the
shared PostgreSQL database, so the suite can share both services with others.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.jobs.models import Job
from app.jobs.store import JobStore
from app.main import create_app
from tests.jobs.conftest import WorkerPool, fresh_schema

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("ATELIER_TEST_REDIS_DB", "7"))
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
LEASE_S = 3.0
LONG_RUN = 1000  # iterations no test waits for: only a cancel or a kill ends such a job in time
JOB_TIMEOUT_S = 120  # a fresh worker imports torch and warms the backbone up before its first job


@pytest.fixture(scope="module")
def schema_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_schema(postgres_admin_url, "atelier_scaleout") as url:
        yield url


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required for the scale-out tests but unreachable: {exc}")
    client.flushdb()
    yield BROKER_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def scaleout_settings(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, schema_url: str, broker: str
) -> Settings:
    root = tmp_path_factory.mktemp("scaleout")
    data = root / "data"
    data.mkdir()
    (data / "cache").symlink_to(cache_dir, target_is_directory=True)
    return Settings(
        data_dir=data,
        models_dir=root / "models",
        warmup=False,
        database_url=schema_url,
        broker_url=broker,
        embedded_worker=False,
        job_backbone="efficientnet-lite0",
        job_lease_seconds=LEASE_S,
        job_sweep_interval_s=0.5,
        job_max_attempts=2,
    )


@pytest.fixture(scope="module")
def workers(
    scaleout_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    settings = scaleout_settings
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ATELIER_BROKER_URL": str(settings.broker_url),
        "ATELIER_DATABASE_URL": str(settings.database_url),
        "ATELIER_DATA_DIR": str(settings.data_dir),
        "ATELIER_MODELS_DIR": str(settings.models_dir),
        "ATELIER_JOB_BACKBONE": settings.job_backbone,
        "ATELIER_JOB_LEASE_SECONDS": str(LEASE_S),
        "ATELIER_JOB_SWEEP_INTERVAL_S": "0.5",
        "ATELIER_JOB_MAX_ATTEMPTS": "2",
    }
    pool = WorkerPool(env, tmp_path_factory.mktemp("worker-logs"))
    yield pool
    pool.kill_all()


@pytest.fixture(scope="module")
def api(scaleout_settings: Settings, workers: WorkerPool) -> Iterator[TestClient]:
    with TestClient(create_app(scaleout_settings)) as test_client:
        assert test_client.app.state.jobs.runners == [], "the API must not run jobs itself"
        yield test_client


def png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 60).convert("RGB").point(lambda v: (v + shade) % 256).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def submit(api: TestClient, **fields: str) -> dict[str, Any]:
    files = [
        ("content", ("photo.png", png(80, 60, 10), "image/png")),
        ("style", ("style.png", png(64, 64, 120), "image/png")),
    ]
    data = {"iterations": "6", "size": "64", "optimizer": "adam", **fields}
    response = api.post("/jobs", files=files, data=data)
    assert response.status_code == 202, response.text
    return response.json()


def row(api: TestClient, job_id: str) -> Job:
    store: JobStore = api.app.state.jobs.store
    return store.get(job_id)


def wait_row(
    api: TestClient, pool: WorkerPool, job_id: str, what: str, check: Any, helpers: Any
) -> Job:
    def reached() -> Job | None:
        job = row(api, job_id)
        return job if check(job) else None

    try:
        return helpers.wait_for(reached, JOB_TIMEOUT_S, what, step=0.1)
    except pytest.fail.Exception:
        job = row(api, job_id)
        pytest.fail(f"{what}: job is {job.state} ({job.error}); worker logs:\n{pool.tails()}")


def holder_pid(job: Job) -> int:
    assert job.lease_owner is not None
    return int(job.lease_owner.split(":")[1])


def test_a_job_runs_on_a_worker_process(api: TestClient, workers: WorkerPool, helpers) -> None:
    worker = workers.ensure_one()
    job = submit(api)

    done = wait_row(
        api, workers, job["id"], "the job to end", lambda j: j.finished_at is not None, helpers
    )
    assert done.state.value == "succeeded", done.error
    assert (done.attempts, done.device, done.backbone) == (1, "cpu", "efficientnet-lite0")
    result = api.get(f"/jobs/{job['id']}/result", params={"format": "png"})
    with Image.open(io.BytesIO(result.content)) as image:
        assert image.size == (64, 48)
    assert worker.poll() is None


def test_cancel_reaches_a_job_on_another_process(
    api: TestClient, workers: WorkerPool, helpers
) -> None:
    worker = workers.ensure_one()
    job = submit(api, iterations=str(LONG_RUN))
    running = wait_row(
        api, workers, job["id"], "the job to run", lambda j: j.iteration >= 1, helpers
    )
    assert holder_pid(running) == worker.pid

    assert api.delete(f"/jobs/{job['id']}").status_code == 200

    ended = wait_row(
        api, workers, job["id"], "the cancel", lambda j: j.finished_at is not None, helpers
    )
    assert ended.state.value == "cancelled" and ended.iteration < LONG_RUN
    assert worker.poll() is None, "the worker must survive a cancel"


def test_a_killed_worker_job_is_retried_then_failed_never_stuck(
    api: TestClient, workers: WorkerPool, helpers
) -> None:
    first = workers.ensure_one()
    job = submit(api, iterations=str(LONG_RUN))
    running = wait_row(
        api, workers, job["id"], "the first run", lambda j: j.iteration >= 1, helpers
    )
    assert holder_pid(running) == first.pid and running.attempts == 1

    # Not reaped yet, so the pid still looks alive: only the lapsed lease can reveal the death.
    first.send_signal(signal.SIGKILL)
    requeued = wait_row(
        api, workers, job["id"], "the requeue", lambda j: j.state.value != "running", helpers
    )
    assert requeued.state.value == "queued" and requeued.attempts == 1
    first.wait(timeout=30)

    second = workers.start()
    rerun = wait_row(
        api,
        workers,
        job["id"],
        "the retry on a new worker",
        lambda j: j.state.value == "running" and j.iteration >= 1,
        helpers,
    )
    assert holder_pid(rerun) == second.pid and rerun.attempts == 2

    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)
    failed = wait_row(
        api,
        workers,
        job["id"],
        "the final failure",
        lambda j: j.finished_at is not None,
        helpers,
    )
    assert failed.state.value == "failed" and failed.attempts == 2
    assert "stopped responding" in failed.error
    body = api.get(f"/jobs/{job['id']}").json()
    assert body["state"] == "failed" and "ATELIER_JOB_MAX_ATTEMPTS" in body["error"]


def test_sigterm_hands_a_running_job_back_at_once_for_the_next_worker(
    api: TestClient, workers: WorkerPool, helpers
) -> None:
    """Graceful shutdown: the job goes back to the queue without waiting for its lease to lapse
    (so the attempt is not counted, which a lapsed lease would do), the worker exits cleanly,
    and a fresh message lets the next worker pick the job up."""
    first = workers.ensure_one()
    job = submit(api, iterations=str(LONG_RUN))
    running = wait_row(api, workers, job["id"], "the run", lambda j: j.iteration >= 1, helpers)
    assert holder_pid(running) == first.pid and running.attempts == 1

    first.send_signal(signal.SIGTERM)
    back = wait_row(
        api, workers, job["id"], "the hand-back", lambda j: j.state.value != "running", helpers
    )
    assert back.state.value == "queued" and back.attempts == 0, "released, not left to lapse"
    assert first.wait(timeout=60) == 0, workers.tails()

    second = workers.start()
    rerun = wait_row(
        api,
        workers,
        job["id"],
        "the next worker's run",
        lambda j: j.state.value == "running" and j.iteration >= 1,
        helpers,
    )
    assert holder_pid(rerun) == second.pid and rerun.attempts == 1
    assert api.delete(f"/jobs/{job['id']}").status_code == 200
    wait_row(api, workers, job["id"], "the cancel", lambda j: j.finished_at is not None, helpers)


def test_sigterm_checkpoints_a_training_job_and_the_next_worker_resumes_it(
    api: TestClient, workers: WorkerPool, helpers
) -> None:
    first = workers.ensure_one()
    files = [("painting", ("painting.png", png(64, 64, 120), "image/png"))]
    files += [("photos", (f"p{i}.png", png(96, 72, 10 * i), "image/png")) for i in range(2)]
    fields = {
        "name": "sigterm-style", "iterations": str(LONG_RUN), "batch_size": "1",
        "crop_size": "64", "style_size": "64", "backbone": "efficientnet-lite0",
        "checkpoint_interval": "0",
    }  # fmt: skip
    response = api.post("/jobs/training", data=fields, files=files)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    wait_row(api, workers, job_id, "training to run", lambda j: j.iteration >= 2, helpers)

    first.send_signal(signal.SIGTERM)
    back = wait_row(
        api, workers, job_id, "the hand-back", lambda j: j.state.value != "running", helpers
    )
    assert back.state.value == "queued" and back.attempts == 0
    assert back.checkpoint_iteration >= 2 and back.iteration == back.checkpoint_iteration
    first.wait(timeout=60)

    workers.start()
    resumed = wait_row(
        api,
        workers,
        job_id,
        "the resumed run",
        lambda j: j.state.value == "running" and j.iteration > back.checkpoint_iteration,
        helpers,
    )
    assert resumed.attempts == 1
    assert api.delete(f"/jobs/{job_id}").status_code == 200
    wait_row(api, workers, job_id, "the cancel", lambda j: j.finished_at is not None, helpers)
