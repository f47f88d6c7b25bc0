"""Access control, rate limits, CORS, request ids and metrics: the public-deployment surface."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from fastapi.testclient import TestClient

from app.jobs.models import BlobKind
from tests.conftest import assert_problem, decode_rgb, image_bytes

KEY_A = "alpha-key-0123456789"
KEY_B = "bravo-key-9876543210"
PREDICT = "/model/predict?style=starry-swirls&max_size=32"


def photo() -> dict:
    return {"image": ("photo.png", image_bytes(40, 30), "image/png")}


def submit_job(client: TestClient, key: str) -> dict:
    response = client.post(
        "/jobs",
        files={
            "content": ("c.png", image_bytes(40, 30), "image/png"),
            "style": ("s.png", image_bytes(40, 30, seed=3), "image/png"),
        },
        data={"iterations": "2", "size": "24"},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    return response.json()


def style_names(client: TestClient, headers: dict) -> list[str]:
    return [
        style["name"] for style in client.get("/model/styles", headers=headers).json()["styles"]
    ]


def test_keys_on_predict_needs_a_valid_key(make_client) -> None:
    with make_client(api_keys=f"{KEY_A},{KEY_B}", embedded_worker=False) as client:
        assert_problem(client.post(PREDICT, files=photo()), 401, "missing_api_key")
        wrong = client.post(PREDICT, files=photo(), headers={"X-API-Key": KEY_A + "x"})
        assert_problem(wrong, 401, "invalid_api_key")
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert client.post(PREDICT, files=photo(), headers={"X-API-Key": KEY_B}).status_code == 200
        bearer = {"Authorization": f"Bearer {KEY_A}"}
        assert client.post(PREDICT, files=photo(), headers=bearer).status_code == 200
        # Probes and docs stay open for orchestrators and people exploring.
        assert client.get("/health/live").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_keys_off_by_default(client: TestClient) -> None:
    assert client.post(PREDICT, files=photo()).status_code == 200


def test_a_job_is_visible_only_to_the_key_that_created_it(make_client) -> None:
    with make_client(api_keys=f"{KEY_A},{KEY_B}", embedded_worker=False) as client:
        job = submit_job(client, KEY_A)
        mine, theirs = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
        assert client.get(f"/jobs/{job['id']}", headers=mine).status_code == 200
        for method, path in [
            ("GET", f"/jobs/{job['id']}"),
            ("GET", f"/jobs/{job['id']}/result"),
            ("GET", f"/jobs/{job['id']}/preview"),
            ("DELETE", f"/jobs/{job['id']}"),
        ]:
            assert_problem(client.request(method, path, headers=theirs), 404, "job_not_found")
        assert client.get("/jobs", headers=theirs).json()["total"] == 0
        assert client.get("/jobs", headers=mine).json()["total"] == 1
        # The other key's failed cancel left the job alone.
        assert client.get(f"/jobs/{job['id']}", headers=mine).json()["state"] == "queued"


def test_user_styles_belong_to_their_key(make_client) -> None:
    painting = {"image": ("p.png", image_bytes(64, 64, seed=9), "image/png")}
    private = "alpha-private-style"
    with make_client(api_keys=f"{KEY_A},{KEY_B}") as client:
        mine, theirs = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
        created = client.post("/model/styles", files=painting, data={"name": private}, headers=mine)
        assert created.status_code == 201, created.text
        assert private in style_names(client, mine)
        assert private not in style_names(client, theirs)
        used = client.post(
            f"/model/predict?style={private}&max_size=32", files=photo(), headers=mine
        )
        assert used.status_code == 200, used.text
        assert_problem(
            client.post(f"/model/predict?style={private}&max_size=32", files=photo()),
            401,
            "missing_api_key",
        )
        assert_problem(
            client.post(
                f"/model/predict?style={private}&max_size=32", files=photo(), headers=theirs
            ),
            404,
            "unknown_style",
        )

        thumbnail = f"/model/styles/{private}/thumbnail"
        assert created.headers["location"].endswith(thumbnail)
        own = client.get(thumbnail, headers=mine)
        assert own.status_code == 200 and own.headers["content-type"] == "image/jpeg"
        assert decode_rgb(own.content).shape[2] == 3
        assert "private" in own.headers["cache-control"]
        assert_problem(client.get(thumbnail, headers=theirs), 404, "unknown_style")
        assert_problem(client.get(thumbnail), 401, "missing_api_key")
        # Built-in thumbnails stay public: the studio shows them before a key is entered.
        public = client.get("/model/styles/crimson-fire/thumbnail")
        assert public.status_code == 200 and public.headers["content-type"] == "image/jpeg"
        # /metrics is open: a private style's name must not show up in its labels.
        assert private not in client.get("/metrics").text

        assert_problem(
            client.delete(f"/model/styles/{private}", headers=theirs), 404, "unknown_style"
        )
        assert client.delete(f"/model/styles/{private}", headers=mine).status_code == 204
        assert_problem(client.get(thumbnail, headers=mine), 404, "unknown_style")


def test_rate_limit_answers_429_with_retry_after(make_client) -> None:
    with make_client(rate_limit="2/minute") as client:
        assert client.post(PREDICT, files=photo()).status_code == 200
        assert client.post(PREDICT, files=photo()).status_code == 200
        limited = client.post(PREDICT, files=photo())
        body = assert_problem(limited, 429, "rate_limited")
        assert "2 per 1 minute" in body["detail"]
        assert 0 < int(limited.headers["retry-after"]) <= 60


def test_cors_is_off_by_default_and_allows_configured_origins(make_client) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key",
    }
    with make_client() as client:
        response = client.options("/model/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with make_client(cors_origins="https://app.example") as client:
        response = client.options("/model/predict", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(
            "/model/predict", headers={**preflight, "Origin": "https://x.example"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_request_id_is_returned_and_reused(client: TestClient) -> None:
    generated = client.get("/health/live").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    echoed = client.get("/health/live", headers={"X-Request-ID": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    hostile = client.get("/health/live", headers={"X-Request-ID": "bad id\r\nx: y"})
    assert hostile.headers["x-request-id"] != "bad id\r\nx: y"
    error = client.get("/nowhere", headers={"X-Request-ID": "trace-43"})
    assert error.status_code == 404 and error.headers["x-request-id"] == "trace-43"


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, parsed from the text format."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics_count_requests_by_route_template_and_status(client: TestClient) -> None:
    client.post(PREDICT, files=photo())
    client.post("/model/predict?style=nope", files=photo())
    client.get("/jobs/0123456789abcdef")
    text = client.get("/metrics").text
    assert sample(text, "atelier_http_requests_total", route="/model/predict", status="200") == 1
    assert sample(text, "atelier_http_requests_total", route="/model/predict", status="404") == 1
    assert sample(text, "atelier_http_requests_total", route="/jobs/{job_id}", status="404") == 1
    assert sample(text, "atelier_http_request_duration_seconds_count", route="/model/predict") == 2
    assert sample(text, "atelier_inference_seconds_count", style="starry-swirls") == 1
    assert sample(text, "atelier_inference_queue_depth") == 0
    assert sample(text, "atelier_jobs", state="queued") == 0


def test_finished_jobs_are_purged_after_the_retention_period(make_client) -> None:
    with make_client(job_retention_hours=1.0) as client:
        store = client.app.state.jobs.store
        job = submit_job(client, "")
        deadline = time.monotonic() + 120
        while client.get(f"/jobs/{job['id']}").json()["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "job did not finish"
            time.sleep(0.2)
        sweeper = client.app.state.jobs.sweeper
        sweeper.sweep()
        assert client.get(f"/jobs/{job['id']}").status_code == 200  # not old enough yet
        real_clock = store.clock
        store.clock = lambda: real_clock() + timedelta(hours=2)
        try:
            sweeper.sweep()
        finally:
            store.clock = real_clock
        assert_problem(client.get(f"/jobs/{job['id']}"), 404, "job_not_found")
        assert store.blob(job["id"], BlobKind.content) is None
