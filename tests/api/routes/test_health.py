"""Liveness and readiness: before, during and after model loading, when loading fails, when
some local styles are broken, and while a slow prediction occupies the inference thread."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import assert_problem, image_bytes, running
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app.nets.transformer_net import TransformerNet
from app.serving.service import Service

PREDICT = "/model/predict"


def predict_files() -> dict:
    return {"image": ("a.png", image_bytes(16, 16), "image/png")}


def test_live_and_ready_once_loaded(shared_client: TestClient) -> None:
    live = shared_client.get("/health/live")
    assert live.status_code == 200 and live.json()["status"] == "alive"
    ready = shared_client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "styles": 26, "device": "cpu"}


def test_not_ready_while_loading_then_ready(make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    release, loading = threading.Event(), threading.Event()
    original = Service._load

    def blocked_load(self: Service, warmup: bool) -> None:
        loading.set()
        assert release.wait(30), "the test never released the loader"
        original(self, warmup)

    monkeypatch.setattr(Service, "_load", blocked_load)
    app = make_app()
    try:
        with TestClient(app) as client:
            assert loading.wait(10)
            live = client.get("/health/live")
            assert live.status_code == 200 and live.json()["status"] == "alive"

            problem = assert_problem(client.get("/health/ready"), 503, "not_ready")
            assert "loading" in problem["detail"]
            assert client.get("/health/ready").headers["retry-after"] == "2"

            response = client.post(PREDICT, files=predict_files())
            assert_problem(response, 503, "warming_up")
            assert response.headers["retry-after"] == "2"
            assert_problem(client.get("/model/styles/golden-haze/thumbnail"), 503, "warming_up")
            # The catalog is known before the networks are loaded.
            assert len(client.get("/model/styles").json()["styles"]) == 26

            release.set()
            assert app.state.service.ready.wait(60)
            assert client.get("/health/ready").status_code == 200
            assert client.post(PREDICT, files=predict_files()).status_code == 200
    finally:
        release.set()


def test_failed_loading_is_reported(make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_load(self: Service, warmup: bool) -> None:
        raise RuntimeError("weights folder unreadable")

    monkeypatch.setattr(Service, "_load", broken_load)
    with running(make_app()) as client:
        assert client.get("/health/live").status_code == 200
        problem = assert_problem(client.get("/health/ready"), 503, "not_ready")
        assert "weights folder unreadable" in problem["detail"]
        response = client.post(PREDICT, files=predict_files())
        problem = assert_problem(response, 503, "models_unavailable")
        assert "weights folder unreadable" in problem["detail"]


def _write_manifest(models: Path, entries: dict[str, str]) -> None:
    text = "".join(f'[styles.{name}]\nfile = "{file}"\n\n' for name, file in entries.items())
    (models / "manifest.toml").write_text(text, encoding="utf-8")


def test_bad_checkpoint_is_skipped_and_reported(make_app) -> None:
    app = make_app()
    service: Service = app.state.service
    models = service.settings.models_dir
    (models / "broken.pth").write_bytes(b"definitely not a checkpoint")
    wrong = TransformerNet().state_dict()
    wrong["conv1.conv2d.weight"] = torch.zeros(8, 3, 9, 9)
    torch.save(wrong, models / "wrong.pth")
    _write_manifest(models, {"broken": "broken.pth", "wrong": "wrong.pth", "absent": "no.pth"})

    with running(app) as client:
        assert service.failed is None
        assert len(service.problems) == 2
        assert any("broken.pth" in problem for problem in service.problems)
        assert any("wrong.pth" in problem for problem in service.problems)
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["styles"] == 26
        names = {style["name"] for style in client.get("/model/styles").json()["styles"]}
        assert not names & {"broken", "wrong", "absent"}
        assert_problem(
            client.post(PREDICT, params={"style": "broken"}, files=predict_files()),
            404,
            "unknown_style",
        )


def test_unreadable_manifest_is_reported_and_builtins_still_serve(make_app) -> None:
    app = make_app()
    service: Service = app.state.service
    (service.settings.models_dir / "manifest.toml").write_text("[styles.x\nfile=", "utf-8")
    with running(app) as client:
        assert len(service.problems) == 1 and "manifest.toml" in service.problems[0]
        assert client.get("/health/ready").status_code == 200
        assert client.post(PREDICT, files=predict_files()).status_code == 200


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("corrupt.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"),
        ("notes.pth", b"this is not a checkpoint"),
    ],
)
def test_any_corrupt_style_file_is_skipped(make_app, filename: str, content: bytes) -> None:
    app = make_app()
    service: Service = app.state.service
    models = service.settings.models_dir
    (models / filename).write_bytes(content)
    good = {k: v.contiguous() for k, v in TransformerNet().state_dict().items()}
    save_file(good, str(models / "good.safetensors"))
    _write_manifest(models, {"corrupt": filename, "good": "good.safetensors"})
    with running(app) as client:
        assert service.failed is None, service.failed
        assert client.get("/health/ready").status_code == 200
        assert any(filename in problem for problem in service.problems)
        names = {style["name"] for style in client.get("/model/styles").json()["styles"]}
        assert "good" in names and "corrupt" not in names


def test_live_answers_promptly_during_a_slow_prediction(run_async_client) -> None:
    async def scenario(client: httpx.AsyncClient, service: Service) -> None:
        entered, release = threading.Event(), threading.Event()
        assert service.runner is not None
        original = service.runner.render

        def slow_render(*args, **kwargs):
            entered.set()
            release.wait(10)
            return original(*args, **kwargs)

        service.runner.render = slow_render
        prediction = asyncio.ensure_future(client.post(PREDICT, files=predict_files()))
        try:
            deadline = time.monotonic() + 10
            while not entered.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert entered.is_set(), "the prediction never reached the network"

            started = time.perf_counter()
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            elapsed = time.perf_counter() - started
            assert live.status_code == 200 and ready.status_code == 200
            assert elapsed < 0.5, f"probes took {elapsed:.2f}s while inference ran"
            assert not prediction.done()  # the prediction really was still running
        finally:
            release.set()
        response = await prediction
        assert response.status_code == 200 and response.headers["x-image-size"] == "16x16"

    run_async_client(scenario)
