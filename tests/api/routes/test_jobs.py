"""/jobs over HTTP with the embedded worker: submit, poll, fetch, cancel, errors, restart, and
running out of memory (with and without `allow_downscale`)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.gatys.optimize import GatysOptions
from app.jobs.kinds import gatys as gatys_kind
from app.jobs.models import BlobKind
from app.jobs.store import JobStore
from app.main import create_app
from app.perceptual.backbones import Backbone
from tests.conftest import assert_problem, make_settings
from tests.jobs.conftest import JOB_TEST_SETTINGS, png_bytes, wait_for

LONG_RUN = 1000  # iterations no test waits for: only cancellation ends such a job in time
TINY = {"iterations": "6", "size": "64", "optimizer": "adam"}


CONTENT = png_bytes(80, 60, seed=1)
STYLE = png_bytes(64, 64, seed=2)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def job_settings(root: Path, cache_dir: Path, **overrides: Any) -> Settings:
    """Settings in `root` with tiny-job timings, sharing the session's converted-weights cache."""
    return make_settings(root, cache_dir, **{**JOB_TEST_SETTINGS, **overrides})


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def make_client(tmp_path: Path, cache_dir: Path) -> Callable[..., Any]:
    """`with make_client(**settings) as client`: an app on this test's data dir."""
    return lambda **overrides: running(job_settings(tmp_path, cache_dir, **overrides))


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as client:
        yield client


@pytest.fixture
def idle_client(make_client) -> Iterator[TestClient]:
    """No worker: submitted jobs stay queued, so tests can look at them unhurried."""
    with make_client(embedded_worker=False, job_max_queued_per_client=3) as client:
        yield client


def submit(
    client: TestClient,
    *,
    content: bytes = CONTENT,
    styles: tuple[bytes, ...] = (STYLE,),
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    files = [("content", ("photo.png", content, "image/png"))]
    files += [("style", (f"style{i}.png", data, "image/png")) for i, data in enumerate(styles)]
    return client.post("/jobs", files=files, data={**TINY, **fields}, headers=headers or {})


def poll_state(client: TestClient, job_id: str, states: set[str], timeout: float) -> dict:
    def reached() -> dict | None:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["state"] in states else None

    return wait_for(reached, timeout, f"job {job_id} to reach {sorted(states)}")


def test_submit_poll_and_fetch_the_result(client: TestClient) -> None:
    response = submit(client, preview_every="3", seed="7", style_weights="1")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] in ("queued", "running")
    assert job["options"]["iterations"] == 6 and job["options"]["seed"] == 7
    assert job["progress"]["total"] == 6 and job["style_images"] == 1

    done = poll_state(client, job["id"], {"succeeded", "failed"}, timeout=120)
    assert done["state"] == "succeeded", done["error"]
    progress = done["progress"]
    assert (progress["iteration"], progress["percent"]) == (6, 100.0)
    assert progress["style_loss"] is not None and progress["eta_s"] == 0.0
    assert (done["backbone"], done["device"], done["attempts"]) == ("efficientnet-lite0", "cpu", 1)
    assert set(done["timings"]) >= {"queued_s", "run_s", "total_s"}

    result = client.get(f"/jobs/{job['id']}/result", params={"format": "png"})
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert image_size(result.content) == (64, 48)  # 80x60 content, long side 64
    assert result.headers["x-image-size"] == "64x48"
    webp = client.get(f"/jobs/{job['id']}/result", params={"format": "webp"})
    assert webp.headers["content-type"] == "image/webp" and image_size(webp.content) == (64, 48)
    assert client.get(f"/jobs/{job['id']}/result").headers["content-type"] == "image/jpeg"
    preview = client.get(f"/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and image_size(preview.content) == (64, 48)

    listed = client.get("/jobs", params={"state": "succeeded"}).json()
    assert [item["id"] for item in listed["items"]] == [job["id"]] and listed["total"] == 1
    assert client.get("/jobs", params={"state": "queued"}).json()["total"] == 0


def test_cancel_a_running_job(client: TestClient) -> None:
    job = submit(client, iterations=str(LONG_RUN)).json()
    wait_for(
        lambda: client.get(f"/jobs/{job['id']}").json()["progress"]["iteration"] >= 1,
        timeout=120,
        what="the job to start running",
    )

    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True

    cancelled = poll_state(client, job["id"], {"cancelled", "succeeded", "failed"}, timeout=30)
    assert cancelled["state"] == "cancelled"
    assert cancelled["progress"]["iteration"] < LONG_RUN
    assert client.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    assert_problem(client.get(f"/jobs/{job['id']}/result"), 409, "job_not_succeeded")


def test_cancel_a_queued_job_is_immediate_and_idempotent(idle_client: TestClient) -> None:
    job = submit(idle_client, preview_every="2").json()
    assert job["state"] == "queued"
    assert_problem(idle_client.get(f"/jobs/{job['id']}/result"), 409, "job_not_succeeded")
    assert_problem(idle_client.get(f"/jobs/{job['id']}/preview"), 409, "preview_not_ready")

    first = idle_client.delete(f"/jobs/{job['id']}")
    second = idle_client.delete(f"/jobs/{job['id']}")
    assert first.status_code == second.status_code == 200
    assert first.json()["state"] == second.json()["state"] == "cancelled"
    assert first.json()["finished_at"] == second.json()["finished_at"]
    assert_problem(idle_client.get(f"/jobs/{job['id']}/preview"), 404, "no_preview")


@pytest.mark.parametrize(
    ("fields", "styles", "status", "code", "mentions"),
    [
        ({"iterations": "5000"}, (STYLE,), 422, "invalid_parameter", "GATYS_MAX_ITERATIONS"),
        ({"size": "4096"}, (STYLE,), 422, "invalid_parameter", "size: 4096 exceeds"),
        ({"iterations": "0"}, (STYLE,), 422, "invalid_parameter", "iterations"),
        ({"optimizer": "sgd"}, (STYLE,), 422, "invalid_parameter", "optimizer"),
        ({"style_scale": "9"}, (STYLE,), 422, "invalid_parameter", "style_scale"),
        ({"size": "1024", "style_scale": "2"}, (STYLE,), 422, "invalid_parameter", "style_scale"),
        ({"scales": "64,32"}, (STYLE,), 422, "invalid_parameter", "scales must be strictly"),
        ({"scales": "32,big"}, (STYLE,), 422, "invalid_parameter", "scales: expected"),
        ({"scales": "32,4096"}, (STYLE,), 422, "invalid_parameter", "scales: 4096 exceeds"),
        ({"style_weights": "1,2"}, (STYLE,), 422, "invalid_parameter", "2 weights for 1"),
        ({"content_weight": "-1"}, (STYLE,), 422, "invalid_parameter", "content_weight"),
        ({}, (), 422, "invalid_parameter", "at least one style image"),
        ({}, (STYLE,) * 5, 422, "invalid_parameter", "ATELIER_GATYS_MAX_STYLE_IMAGES"),
        ({"style_name": "starry-swirls"}, (), 422, "invalid_parameter", "no reference painting"),
        ({"style_name": "starry-swirls"}, (STYLE,), 422, "invalid_parameter", "not both"),
        ({"style_name": "no-such-style"}, (), 404, "unknown_style", "no-such-style"),
        ({}, (b"GIF89a-but-not-really",), 400, "invalid_image", "style image 1:"),
    ],
)
def test_rejected_submissions(
    idle_client: TestClient,
    fields: dict[str, str],
    styles: tuple[bytes, ...],
    status: int,
    code: str,
    mentions: str,
) -> None:
    body = assert_problem(submit(idle_client, styles=styles, **fields), status, code)
    assert mentions in body["detail"], body["detail"]
    assert idle_client.get("/jobs").json()["total"] == 0


def test_bad_content_image_is_400(idle_client: TestClient) -> None:
    body = assert_problem(submit(idle_client, content=b"not an image"), 400, "invalid_image")
    assert body["detail"].startswith("content:")


def test_unknown_job_ids_are_404(idle_client: TestClient) -> None:
    missing = "0" * 32
    for response in (
        idle_client.get(f"/jobs/{missing}"),
        idle_client.delete(f"/jobs/{missing}"),
        idle_client.get(f"/jobs/{missing}/result"),
        idle_client.get(f"/jobs/{missing}/preview"),
    ):
        assert_problem(response, 404, "job_not_found")
    assert_problem(idle_client.get("/jobs", params={"state": "paused"}), 422, "invalid_parameter")
    assert_problem(idle_client.get("/jobs", params={"limit": "1000"}), 422, "invalid_parameter")


def test_too_many_queued_jobs_per_client_is_429(idle_client: TestClient) -> None:
    for _ in range(3):
        assert submit(idle_client).status_code == 202
    body = assert_problem(submit(idle_client), 429, "too_many_jobs")
    assert "ATELIER_JOB_MAX_QUEUED_PER_CLIENT" in body["detail"]
    assert int(submit(idle_client).headers["retry-after"]) > 0
    # A cancelled job frees a slot.
    first = idle_client.get("/jobs", params={"limit": "1", "offset": "2"}).json()
    assert first["total"] == 3
    idle_client.delete(f"/jobs/{first['items'][0]['id']}")
    assert submit(idle_client).status_code == 202


def test_a_job_left_running_by_a_dead_process_finishes_after_restart(make_client) -> None:
    with make_client(embedded_worker=False) as first:
        job = submit(first).json()
        store: JobStore = first.app.state.jobs.store
        # What a process killed mid-job leaves behind: a running row whose lease has lapsed.
        assert store.claim("gone-host:4242:local-dead", lease_seconds=-1.0) is not None
        assert first.get(f"/jobs/{job['id']}").json()["state"] == "running"

    with make_client() as second:
        done = poll_state(second, job["id"], {"succeeded", "failed"}, timeout=120)
        assert done["state"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        result = second.get(f"/jobs/{job['id']}/result", params={"format": "png"})
        assert image_size(result.content) == (64, 48)


def test_unreachable_database_is_503_and_the_api_stays_up(make_client) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:9/test"
    with make_client(database_url=unreachable) as client:
        assert_problem(client.get("/jobs"), 503, "database_unavailable")
        assert_problem(submit(client), 503, "database_unavailable")
        assert client.get("/health/live").status_code == 200


def test_openapi_documents_the_job_routes(idle_client: TestClient) -> None:
    paths = idle_client.get("/openapi.json").json()["paths"]
    assert set(paths["/jobs"]) == {"get", "post"}
    assert set(paths["/jobs/{job_id}"]) == {"get", "delete"}
    assert "429" in paths["/jobs"]["post"]["responses"]
    assert "409" in paths["/jobs/{job_id}/result"]["get"]["responses"]
    assert "/jobs/{job_id}/preview" in paths


class OutOfMemoryOnce:
    """Stands in for the engine's `run`: raises torch.OutOfMemoryError on the first `failures`
    calls (as CUDA does on a too-large image), then runs the real engine; records the options
    of every call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[GatysOptions] = []
        self.real = gatys_kind.run

    def __call__(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        options: GatysOptions,
        backbone: Backbone,
        **kwargs: Any,
    ) -> np.ndarray:
        self.calls.append(options)
        if len(self.calls) <= self.failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.real(content, styles, options, backbone, **kwargs)


def finished(client: TestClient, job_id: str) -> dict:
    return poll_state(client, job_id, {"succeeded", "failed", "cancelled"}, timeout=120)


def test_out_of_memory_fails_with_a_readable_reason_without_allow_downscale(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = OutOfMemoryOnce(failures=1)
    monkeypatch.setattr(gatys_kind, "run", engine)

    job = submit(client).json()
    assert job["options"]["allow_downscale"] is False

    done = finished(client, job["id"])
    assert done["state"] == "failed"
    assert done["error"] == (
        "out of GPU memory at 64 px; retry with a smaller size or allow_downscale=true"
    )
    assert "downscaled_to" not in done["options"]
    assert len(engine.calls) == 1, "the job was retried although the client did not allow it"


@pytest.mark.parametrize(
    ("fields", "first_scales", "retry_scales"),
    [({}, None, None), ({"scales": "32,64", "iterations": "6"}, (32, 64), (22, 45))],
)
def test_allow_downscale_retries_once_smaller_and_says_so(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, str],
    first_scales: tuple[int, ...] | None,
    retry_scales: tuple[int, ...] | None,
) -> None:
    engine = OutOfMemoryOnce(failures=1)
    monkeypatch.setattr(gatys_kind, "run", engine)

    job = submit(client, allow_downscale="true", **fields).json()
    assert job["options"]["allow_downscale"] is True

    done = finished(client, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["options"]["downscaled_to"] == 45  # 0.7 x 64
    assert done["options"]["size"] == 64, "what the client asked for must stay visible"
    assert [(c.output_size, c.scales) for c in engine.calls] == [
        (64, first_scales),
        (45, retry_scales),
    ]
    assert done["progress"]["iteration"] == 6 and done["attempts"] == 1
    result = client.get(f"/jobs/{job['id']}/result", params={"format": "png"})
    assert image_size(result.content) == (45, 34)  # 64x48 content, long side 45


def test_a_downscaled_job_that_runs_out_of_memory_again_fails_with_both_sizes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = OutOfMemoryOnce(failures=2)
    monkeypatch.setattr(gatys_kind, "run", engine)

    job = submit(client, allow_downscale="true").json()

    done = finished(client, job["id"])
    assert done["state"] == "failed"
    assert done["error"].startswith(
        "out of GPU memory at 45 px, even after downscaling from 64 px; retry with a smaller"
    ), done["error"]
    assert done["options"]["downscaled_to"] == 45
    assert len(engine.calls) == 2, "a job is downscaled once at most"


def test_allow_downscale_must_be_a_boolean(idle_client: TestClient) -> None:
    assert_problem(submit(idle_client, allow_downscale="maybe"), 422, "invalid_parameter")
    assert idle_client.get("/jobs").json()["total"] == 0


def test_results_are_served_without_decoding_and_each_other_format_is_encoded_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored PNG goes out as it is (its size comes from the row, not a decode); a JPEG or
    WebP of it is encoded on the first request and served from the cache afterwards."""
    from app.api.routes import jobs as jobs_api

    job = submit(client).json()
    assert finished(client, job["id"])["state"] == "succeeded"
    stored = client.app.state.jobs.store.stored_blob(job["id"], BlobKind.result)
    assert (stored.width, stored.height) == (64, 48)

    decodes: list[int] = []
    real_pixels = jobs_api._pixels

    def counting(png: bytes) -> np.ndarray:
        decodes.append(1)
        return real_pixels(png)

    monkeypatch.setattr(jobs_api, "_pixels", counting)
    png = client.get(f"/jobs/{job['id']}/result", params={"format": "png"})
    assert png.content == stored.data and png.headers["x-image-size"] == "64x48"
    assert decodes == [], "a PNG result was decoded to be served"
    for _ in range(3):
        jpeg = client.get(f"/jobs/{job['id']}/result")
        assert jpeg.headers["content-type"] == "image/jpeg"
        assert client.get(f"/jobs/{job['id']}/preview").status_code == 200
    assert len(decodes) == 1, f"the JPEG was encoded {len(decodes)} times"


def test_a_job_above_the_tile_size_runs_in_tiles_with_the_same_result(
    make_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATELIER_GATYS_TILE_SIZE reaches the engine: with tiles of 160 px the 64x48 job runs in
    tiles on the in-box VGG-16 (fp32), and gives the whole-image job's picture."""
    from app.gatys import optimize

    tiled_calls: list[int] = []
    tiled = optimize.tiled_objective
    monkeypatch.setattr(
        optimize, "tiled_objective", lambda *a, **k: tiled_calls.append(1) or tiled(*a, **k)
    )
    results = []
    for tile_size in (0, 192):
        with make_client(gatys_backbone="vgg16", gatys_tile_size=tile_size) as client:
            job = submit(client, seed="3", size="240", iterations="3", optimizer="lbfgs").json()
            done = finished(client, job["id"])
            assert done["state"] == "succeeded", done["error"]
            assert done["backbone"] == "vgg16"
            png = client.get(f"/jobs/{job['id']}/result", params={"format": "png"}).content
            results.append(np.asarray(Image.open(io.BytesIO(png)), dtype=int))
    assert len(tiled_calls) == 3
    assert np.abs(results[0] - results[1]).max() <= 1
