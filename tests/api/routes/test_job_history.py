"""GET /jobs/training/presets (iterations and time estimates) and GET /jobs/{id}/history (a
job's loss curve, polled incrementally), over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.jobs.models import BlobKind
from app.jobs.store import JobInput, NewJob, ProgressUpdate
from app.main import create_app
from tests.conftest import assert_problem, make_settings
from tests.jobs.conftest import JOB_TEST_SETTINGS, png_bytes, wait_for

KEYS = "key-a,key-b"
TINY_GATYS = {"iterations": "5", "size": "48", "optimizer": "adam"}


@pytest.fixture
def make_client(tmp_path: Path, cache_dir: Path) -> Callable[..., Any]:
    @contextmanager
    def running(**overrides: Any) -> Iterator[TestClient]:
        settings = make_settings(tmp_path, cache_dir, **{**JOB_TEST_SETTINGS, **overrides})
        with TestClient(create_app(settings)) as client:
            yield client

    return running


def submit_gatys(client: TestClient, key: str | None = None) -> str:
    files = [
        ("content", ("c.png", png_bytes(48, 40, seed=1), "image/png")),
        ("style", ("s.png", png_bytes(48, 48, seed=2), "image/png")),
    ]
    headers = {"X-API-Key": key} if key else {}
    response = client.post("/jobs", files=files, data=TINY_GATYS, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_presets_estimate_from_the_declared_throughput(make_client, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(png_bytes(64, 64))
    settings = {
        "embedded_worker": False,
        "training_quick_iterations": 30,
        "training_thorough_iterations": 90,
        "training_images_per_s": 3.0,
        "training_photos_dir": photos,
    }
    with make_client(**settings) as client:
        body = client.get("/jobs/training/presets").json()
    assert body["basis"] == "declared" and body["images_per_s"] == 3.0
    assert body["photos_available"] is True
    quick, thorough = body["presets"]
    assert (quick["name"], quick["iterations"], thorough["iterations"]) == ("quick", 30, 90)
    # Steps x batch x (crop / 192)^2 / images per second, by hand: 30 x 2 x 1 / 3.
    assert (quick["batch_size"], quick["crop_size"]) == (2, 192)
    assert quick["estimate_s"] == 20.0 and thorough["estimate_s"] == 60.0


def test_presets_never_exceed_the_iteration_limit_and_say_when_photos_are_missing(
    make_client,
) -> None:
    with make_client(
        embedded_worker=False, training_max_iterations=50, training_photos_dir=None
    ) as client:
        body = client.get("/jobs/training/presets").json()
    assert [p["iterations"] for p in body["presets"]] == [50, 50]
    assert body["photos_available"] is False


def test_presets_estimate_from_a_finished_training_job(make_client) -> None:
    with make_client(embedded_worker=False, training_quick_iterations=10) as client:
        store = client.app.state.jobs.store
        options = {"name": "x", "title": "X", "train": {"crop_size": 96, "batch_size": 1}}
        job = store.create(
            NewJob(options, 4, [JobInput(BlobKind.style, png_bytes(8, 8))], kind="training")
        )
        assert store.claim("w", 60.0) is not None
        store.update_progress(job.id, "w", ProgressUpdate(4, 4, metrics={"images_per_s": 8.0}))
        assert store.finish(job.id, "w", b"pth")
        body = client.get("/jobs/training/presets").json()
    # 8 images/s at 96 px is 2 images/s at 192 px; quick: 10 steps x 2 images / 2 = 10 s.
    assert body["basis"] == "measured" and body["images_per_s"] == 2.0
    assert body["presets"][0]["estimate_s"] == 10.0


def test_a_gatys_job_has_a_loss_curve_polled_incrementally(make_client) -> None:
    with make_client() as client:
        job_id = submit_gatys(client)
        wait_for(
            lambda: client.get(f"/jobs/{job_id}").json()["state"] == "succeeded", 120, "the job"
        )
        job = client.get(f"/jobs/{job_id}").json()
        history = client.get(f"/jobs/{job_id}/history").json()
        steps = [p["step"] for p in history["points"]]
        assert steps == [1, 2, 3, 4, 5] and history["last_step"] == 5
        last = history["points"][-1]
        assert last["content_loss"] == pytest.approx(job["progress"]["content_loss"])
        assert last["total_loss"] == pytest.approx(
            last["content_loss"] + last["style_loss"] + last["tv_loss"]
        )
        newer = client.get(f"/jobs/{job_id}/history?after=3").json()
        assert [p["step"] for p in newer["points"]] == [4, 5]
        done = client.get(f"/jobs/{job_id}/history?after=5").json()
        assert done["points"] == [] and done["last_step"] == 5


@pytest.mark.parametrize("after", ["-1", "x", "2147483648"])
def test_a_bad_after_is_422(make_client, after: str) -> None:
    with make_client(embedded_worker=False) as client:
        job_id = submit_gatys(client)
        assert_problem(
            client.get(f"/jobs/{job_id}/history?after={after}"), 422, "invalid_parameter"
        )


def test_history_of_unknown_and_other_clients_jobs_is_404(make_client) -> None:
    with make_client(embedded_worker=False, api_keys=KEYS) as client:
        job_id = submit_gatys(client, key="key-a")
        mine = client.get(f"/jobs/{job_id}/history", headers={"X-API-Key": "key-a"})
        assert mine.status_code == 200 and mine.json()["points"] == []
        theirs = client.get(f"/jobs/{job_id}/history", headers={"X-API-Key": "key-b"})
        assert_problem(theirs, 404, "job_not_found")
        unknown = client.get("/jobs/" + "0" * 32 + "/history", headers={"X-API-Key": "key-a"})
        assert_problem(unknown, 404, "job_not_found")
        assert client.get(f"/jobs/{job_id}/history").status_code == 401
        assert client.get("/jobs/training/presets").status_code == 401
