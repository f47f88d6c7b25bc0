"""Training jobs through the real executor and store: success publishes a style, a killed worker's
job resumes from its checkpoint (and ends with the same weights as an uninterrupted run), a
stopping worker saves and hands back, cancel, and unusable stored inputs."""

from __future__ import annotations

import fnmatch
import io
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from app.core.config import Settings
from app.core.progress import ProgressUpdate
from app.jobs.execute import execute_job
from app.jobs.kinds import training as training_kind
from app.jobs.kinds.training import TrainingJobOptions
from app.jobs.models import BlobKind, JobState
from app.jobs.store import JobInput, JobStore, NewJob
from app.styles.catalog import NetworkFamily
from app.styles.user_styles import UserStyleStore
from app.training import TrainOptions
from app.weights.checkpoints import transformer_net_from_bytes

WORKER = "trainer-1"
LEASE = 30.0


class WorkerDied(BaseException):
    """Stands in for SIGKILL: escapes every `except Exception` in the executor."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")


def training_job(helpers, *, iterations: int = 6, name: str = "my-style", **train: Any) -> NewJob:
    values: dict[str, Any] = {
        "iterations": iterations,
        "batch_size": 1,
        "crop_size": 64,
        "style_size": 64,
        "precision": "fp32",
        "backbone": "efficientnet-lite0",
        "checkpoint_interval": 2,
        "preview_interval": 0,
        **train,
    }
    options = TrainingJobOptions(name, "My Style", "", TrainOptions(**values))
    inputs = [JobInput(BlobKind.style, helpers.png(80, 80, seed=9))]
    inputs += [JobInput(BlobKind.content, helpers.png(96, 72, seed=s)) for s in range(3)]
    return NewJob(options.to_json(), iterations, inputs, "training", "efficientnet-lite0", "me")


def run_claimed(store: JobStore, settings: Settings, **kwargs: Any) -> JobState | None:
    job = store.claim(WORKER, LEASE, kinds=["training"])
    assert job is not None
    return execute_job(store, job.id, WORKER, settings, **kwargs)


def trained_weights(store: JobStore, job_id: str) -> dict[str, torch.Tensor]:
    data = store.blob(job_id, BlobKind.result)
    assert data is not None
    return torch.load(io.BytesIO(data), weights_only=True)


def test_a_training_job_publishes_its_style_and_returns_the_weights(
    sqlite_store: JobStore, settings: Settings, helpers
) -> None:
    job = sqlite_store.create(training_job(helpers))
    assert run_claimed(sqlite_store, settings) is JobState.succeeded

    done = sqlite_store.get(job.id)
    assert (done.iteration, done.total, done.kind) == (6, 6, "training")
    assert done.metrics is not None and done.metrics["images_per_s"] > 0
    assert sqlite_store.blob(job.id, BlobKind.checkpoint) is None, "kept after success"
    style = UserStyleStore(sqlite_store.engine).get("my-style")
    assert style is not None and style.network is NetworkFamily.transformer and style.owner == "me"
    assert style.weights is not None
    served = transformer_net_from_bytes(style.weights, "served")
    result = trained_weights(sqlite_store, job.id)
    for name, tensor in served.state_dict().items():
        # the style keeps fp16 weights, the result the fp32 state dict
        assert torch.allclose(tensor, result[name], atol=1e-2, rtol=1e-2), name


def test_a_killed_workers_job_resumes_from_its_checkpoint_and_matches_a_straight_run(
    sqlite_store: JobStore, settings: Settings, helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = sqlite_store.create(training_job(helpers, name="straight"))
    assert run_claimed(sqlite_store, settings) is JobState.succeeded

    job = sqlite_store.create(training_job(helpers, name="resumed"))
    real_update = sqlite_store.update_progress
    seen: list[int] = []
    kills = [WorkerDied()]

    def die_after_step_3(job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        seen.append(progress.iteration)
        if progress.iteration == 3 and kills:
            raise kills.pop()
        return real_update(job_id, worker_id, progress)

    monkeypatch.setattr(sqlite_store, "update_progress", die_after_step_3)
    monkeypatch.setattr("app.jobs.execute.PROGRESS_INTERVAL_S", 0.0)
    with pytest.raises(WorkerDied):
        run_claimed(sqlite_store, settings)
    # The lease lapses; the sweeper puts the job back at its last checkpoint (step 2).
    assert sqlite_store.expire_lease(job.id, WORKER)
    (outcome,) = sqlite_store.requeue_expired(max_attempts=3)
    assert (outcome.state, outcome.kind) == (JobState.queued, "training")
    requeued = sqlite_store.get(job.id)
    assert (requeued.iteration, requeued.checkpoint_iteration, requeued.attempts) == (2, 2, 1)

    seen.clear()
    assert run_claimed(sqlite_store, settings) is JobState.succeeded
    assert seen[0] == 3, f"the second attempt restarted at {seen[0]}, not after the checkpoint"
    assert sqlite_store.get(job.id).attempts == 2
    expected, got = (
        trained_weights(sqlite_store, straight.id),
        trained_weights(sqlite_store, job.id),
    )
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name


def test_a_stopping_worker_saves_a_checkpoint_and_hands_the_job_back(
    sqlite_store: JobStore, settings: Settings, helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    job = sqlite_store.create(training_job(helpers, iterations=50, checkpoint_interval=0))
    real_update = sqlite_store.update_progress

    def stop_at_step_3(job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        if progress.iteration >= 3:
            stop.set()
        return real_update(job_id, worker_id, progress)

    monkeypatch.setattr(sqlite_store, "update_progress", stop_at_step_3)
    monkeypatch.setattr("app.jobs.execute.PROGRESS_INTERVAL_S", 0.0)
    assert run_claimed(sqlite_store, settings, stop=stop) is JobState.queued
    back = sqlite_store.get(job.id)
    assert back.state is JobState.queued and back.attempts == 0
    assert back.iteration == back.checkpoint_iteration >= 3
    assert sqlite_store.blob(job.id, BlobKind.checkpoint) is not None


def test_cancel_stops_a_training_job_within_a_step(
    sqlite_store: JobStore, settings: Settings, helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = sqlite_store.create(training_job(helpers, iterations=500))
    real_update = sqlite_store.update_progress

    def cancel_at_step_2(job_id: str, worker_id: str, progress: ProgressUpdate) -> bool:
        if progress.iteration == 2:
            sqlite_store.request_cancel(job_id)
        return real_update(job_id, worker_id, progress)

    monkeypatch.setattr(sqlite_store, "update_progress", cancel_at_step_2)
    monkeypatch.setattr("app.jobs.execute.PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr("app.jobs.execute.CANCEL_CHECK_S", 0.0)
    assert run_claimed(sqlite_store, settings) is JobState.cancelled
    assert sqlite_store.get(job.id).iteration <= 3
    assert UserStyleStore(sqlite_store.engine).get("my-style") is None


def test_a_job_without_photos_uses_the_servers_folder_or_fails_saying_how(
    sqlite_store: JobStore, settings: Settings, helpers, tmp_path: Path
) -> None:
    new = training_job(helpers, iterations=2)
    painting_only = NewJob(new.options, new.total, new.inputs[:1], "training", None, "me")
    job = sqlite_store.create(painting_only)
    no_folder = settings.model_copy(update={"training_photos_dir": None})
    assert run_claimed(sqlite_store, no_folder) is JobState.failed
    assert "ATELIER_TRAINING_PHOTOS_DIR" in (sqlite_store.get(job.id).error or "")

    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(2):
        (folder / f"{seed}.png").write_bytes(helpers.png(90, 70, seed=seed))
    with_folder = settings.model_copy(update={"training_photos_dir": folder})
    job = sqlite_store.create(painting_only)
    assert run_claimed(sqlite_store, with_folder) is JobState.succeeded


def test_a_corrupt_stored_painting_fails_the_job_naming_it(
    sqlite_store: JobStore, settings: Settings, helpers
) -> None:
    new = training_job(helpers)
    broken = [JobInput(BlobKind.style, b"not an image"), *new.inputs[1:]]
    job = sqlite_store.create(NewJob(new.options, new.total, broken, "training", None, "me"))
    assert run_claimed(sqlite_store, settings) is JobState.failed
    assert sqlite_store.get(job.id).error.startswith("the stored painting is unusable")


def test_training_kind_reads_its_options_back(helpers) -> None:
    options = TrainingJobOptions.from_json(training_job(helpers).options)
    assert options.name == "my-style" and options.train.crop_size == 64
    assert set(training_kind.PHOTO_SUFFIXES) == {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".heic",
        ".heif",
        ".avif",
    }


def test_options_stored_before_warm_starts_existed_still_load(helpers) -> None:
    stored = training_job(helpers).options
    del stored["train"]["warm_start"]
    assert TrainingJobOptions.from_json(stored).train.warm_start is True


REPO = Path(__file__).resolve().parents[3]


def test_the_default_photo_folder_ships_licensed_photos_that_install_and_decode(
    helpers,
) -> None:
    folder = Settings().training_photos_dir
    assert folder is not None
    files = training_kind.photo_folder_files(folder)
    assert len(files) >= 12
    sources = (folder / "SOURCES.md").read_text()
    for file in files:
        assert f"| {file.name} |" in sources, f"{file.name} has no origin in SOURCES.md"
    # Installed with the package: pyproject's package-data covers every file of the folder.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["app"]
    relative = [p.relative_to(REPO / "app").as_posix() for p in folder.iterdir()]
    assert all(any(fnmatch.fnmatch(r, pattern) for pattern in patterns) for r in relative)
    photos = training_kind.load_photos([f.read_bytes() for f in files], Settings(), "photo")
    assert all(max(p.shape[:2]) <= 512 and p.shape[2] == 3 for p in photos)


def test_warm_start_weights_are_the_named_installed_style(tmp_path: Path) -> None:
    settings = Settings(models_dir=REPO / "models", training_warm_start_style="mosaic-atelier")
    weights = training_kind.warm_start_weights(settings)
    assert weights is not None
    on_disk = load_file(str(REPO / "models" / "mosaic-atelier.safetensors"))
    assert weights.keys() == on_disk.keys()
    for name, tensor in on_disk.items():
        assert torch.equal(weights[name], tensor.float()), name


def test_a_missing_warm_start_style_falls_back_to_random_weights_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(models_dir=REPO / "models", training_warm_start_style="no-such-style")
    with caplog.at_level("WARNING", logger="atelier.jobs.training"):
        assert training_kind.warm_start_weights(settings) is None
    assert "no-such-style" in caplog.text and "ATELIER_TRAINING_WARM_START_STYLE" in caplog.text
    assert training_kind.warm_start_weights(Settings(models_dir=tmp_path)) is None
