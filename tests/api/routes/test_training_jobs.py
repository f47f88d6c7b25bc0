"""POST /jobs/training over HTTP: a trained style is served by name, survives a restart, is
private to its key, downloads as a pytorch/examples .pth and as ONNX, and bad requests get
clear 4xx answers."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from torch import nn

from app.main import create_app
from tests.conftest import assert_problem, decode_rgb, make_settings
from tests.jobs.conftest import JOB_TEST_SETTINGS, png_bytes, wait_for

PAINTING = png_bytes(80, 80, seed=9)
PHOTOS = [png_bytes(96, 72, seed=seed) for seed in range(3)]
TINY = {
    "iterations": "4",
    "batch_size": "1",
    "crop_size": "64",
    "style_size": "64",
    "backbone": "efficientnet-lite0",
    "checkpoint_interval": "2",
    "preview_interval": "2",
}
KEYS = "key-a,key-b"


@pytest.fixture
def make_client(tmp_path: Path, cache_dir: Path) -> Callable[..., Any]:
    @contextmanager
    def running(**overrides: Any) -> Iterator[TestClient]:
        settings = make_settings(tmp_path, cache_dir, **{**JOB_TEST_SETTINGS, **overrides})
        with TestClient(create_app(settings)) as client:
            wait_for(lambda: client.get("/health/ready").status_code == 200, 120, "readiness")
            yield client

    return running


def submit(client: TestClient, key: str | None = None, photos: list[bytes] = PHOTOS, **fields):
    files = [("painting", ("painting.png", PAINTING, "image/png"))]
    files += [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    data = {"name": "my-style", **TINY, **fields}
    headers = {"X-API-Key": key} if key else {}
    return client.post("/jobs/training", data=data, files=files, headers=headers)


def finished(client: TestClient, job_id: str, key: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": key} if key else {}
    return wait_for(
        lambda: (
            (job := client.get(f"/jobs/{job_id}", headers=headers).json())["state"]
            in ("succeeded", "failed", "cancelled")
            and job
        ),
        120,
        "the training job to end",
    )


class PublishedTransformerNet(nn.Module):
    """pytorch/examples' fast_neural_style TransformerNet, written out again from its published
    layout (conv + instance norm blocks, five residual blocks, nearest upsampling): an
    independent reader for the downloaded .pth."""

    def __init__(self) -> None:
        super().__init__()

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
            block = nn.Module()
            block.reflection_pad = nn.ReflectionPad2d(k // 2)
            block.conv2d = nn.Conv2d(cin, cout, k, stride)
            return block

        self.conv1, self.in1 = conv(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = conv(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = conv(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        for index in range(1, 6):
            block = nn.Module()
            block.conv1, block.in1 = conv(128, 128, 3), nn.InstanceNorm2d(128, affine=True)
            block.conv2, block.in2 = conv(128, 128, 3), nn.InstanceNorm2d(128, affine=True)
            setattr(self, f"res{index}", block)
        self.deconv1, self.in4 = conv(128, 64, 3), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = conv(64, 32, 3), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = conv(32, 3, 9)

    @staticmethod
    def _conv(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.conv2d(block.reflection_pad(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self._conv
        y = F.relu(self.in1(c(self.conv1, x)))
        y = F.relu(self.in2(c(self.conv2, y)))
        y = F.relu(self.in3(c(self.conv3, y)))
        for index in range(1, 6):
            block = getattr(self, f"res{index}")
            y = y + block.in2(c(block.conv2, F.relu(block.in1(c(block.conv1, y)))))
        y = F.relu(self.in4(c(self.deconv1, F.interpolate(y, scale_factor=2, mode="nearest"))))
        y = F.relu(self.in5(c(self.deconv2, F.interpolate(y, scale_factor=2, mode="nearest"))))
        return c(self.deconv3, y)


def test_a_trained_style_is_served_downloadable_and_survives_a_restart(make_client) -> None:
    photo = png_bytes(64, 48, seed=42)
    with make_client() as client:
        response = submit(client)
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == f"/jobs/{response.json()['id']}"
        job = finished(client, response.json()["id"])
        assert job["state"] == "succeeded", job["error"]
        assert job["kind"] == "training" and job["progress"]["iteration"] == 4
        assert job["progress"]["metrics"]["images_per_s"] > 0

        listed = {s["name"]: s for s in client.get("/model/styles").json()["styles"]}
        assert listed["my-style"]["network"] == "transformer-net"
        thumbnail = client.get("/model/styles/my-style/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
        served = client.post(
            "/model/predict?style=my-style&format=png",
            files={"image": ("photo.png", photo, "image/png")},
        )
        assert served.status_code == 200, served.text
        pth = client.get("/model/styles/my-style/weights?format=pth")
        onnx = client.get("/model/styles/my-style/weights?format=onnx")
        result = client.get(f"/jobs/{job['id']}/result")
        assert pth.status_code == onnx.status_code == result.status_code == 200
        assert result.content == pth.content or len(result.content) == len(pth.content)

    # The published layout loads the download and renders what the service served.
    reference = PublishedTransformerNet()
    reference.load_state_dict(torch.load(io.BytesIO(pth.content), weights_only=True))
    pixels = torch.from_numpy(decode_rgb(photo).copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = reference.eval()(pixels).clamp(0, 255)[0].permute(1, 2, 0).numpy()
    difference = np.abs(expected - decode_rgb(served.content).astype(np.float32))
    assert difference.mean() < 2.0, f"served output differs from the .pth by {difference.mean()}"
    # The ONNX download runs in onnxruntime and agrees with torch on the same weights.
    session = ort.InferenceSession(onnx.content)
    onnx_out = session.run(None, {"input": pixels.numpy()})[0][0].transpose(1, 2, 0)
    with torch.no_grad():
        torch_out = reference(pixels)[0].permute(1, 2, 0).numpy()
    assert np.abs(onnx_out - torch_out).max() < 0.05

    with make_client() as restarted:
        again = restarted.post(
            "/model/predict?style=my-style&format=png",
            files={"image": ("photo.png", photo, "image/png")},
        )
        assert again.status_code == 200 and again.content == served.content
        assert restarted.delete("/model/styles/my-style").status_code == 204
        assert_problem(restarted.get("/model/styles/my-style/weights"), 404, "unknown_style")


def test_a_trained_style_is_private_to_its_key(make_client) -> None:
    with make_client(api_keys=KEYS) as client:
        response = submit(client, key="key-a", name="secret-style")
        job = finished(client, response.json()["id"], key="key-a")
        assert job["state"] == "succeeded", job["error"]
        photo = {"image": ("photo.png", png_bytes(40, 40, seed=1), "image/png")}
        url = "/model/predict?style=secret-style"
        assert client.post(url, files=photo, headers={"X-API-Key": "key-a"}).status_code == 200
        other = client.post(url, files=photo, headers={"X-API-Key": "key-b"})
        assert_problem(other, 404, "unknown_style")
        for path in ("/model/styles/secret-style/weights", "/model/styles/secret-style/thumbnail"):
            assert_problem(client.get(path, headers={"X-API-Key": "key-b"}), 404, "unknown_style")
            assert client.get(path).status_code == 401
        assert_problem(
            client.get(f"/jobs/{job['id']}/result", headers={"X-API-Key": "key-b"}),
            404,
            "job_not_found",
        )


@pytest.mark.parametrize(
    ("fields", "photos", "painting", "status", "code"),
    [
        ({}, PHOTOS, b"not an image", 400, "invalid_image"),
        ({"backbone": "resnet50"}, PHOTOS, PAINTING, 422, "invalid_parameter"),
        ({"iterations": "999999"}, PHOTOS, PAINTING, 422, "invalid_parameter"),
        ({"crop_size": "66"}, PHOTOS, PAINTING, 422, "invalid_parameter"),
        ({"name": "Not A Name"}, PHOTOS, PAINTING, 422, "invalid_parameter"),
        ({"name": "starry-swirls"}, PHOTOS, PAINTING, 409, "style_exists"),
        ({}, [b"\x89PNG\r\n\x1a\n broken"], PAINTING, 400, "invalid_image"),
    ],
)
def test_bad_training_requests_get_a_clear_4xx(
    make_client, fields: dict, photos: list[bytes], painting: bytes, status: int, code: str
) -> None:
    with make_client(embedded_worker=False) as client:
        files = [("painting", ("painting.png", painting, "image/png"))]
        files += [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(photos)]
        response = client.post(
            "/jobs/training", data={"name": "my-style", **TINY, **fields}, files=files
        )
        assert_problem(response, status, code)
        assert client.get("/jobs").json()["total"] == 0, "a refused request queued a job"


def test_without_photos_the_shipped_set_is_used_and_without_any_it_is_a_clear_422(
    make_client,
) -> None:
    with make_client(embedded_worker=False) as client:
        accepted = submit(client, photos=[])
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["options"]["train"]["warm_start"] is True
        cold = submit(client, photos=[], name="cold-style", warm_start="false")
        assert cold.status_code == 202, cold.text
        assert cold.json()["options"]["train"]["warm_start"] is False
    with make_client(embedded_worker=False, training_photos_dir=None) as client:
        before = client.get("/jobs").json()["total"]
        assert_problem(submit(client, photos=[], name="third-style"), 422, "no_training_photos")
        assert client.get("/jobs").json()["total"] == before


def test_a_name_taken_by_a_user_style_is_a_conflict(make_client) -> None:
    with make_client() as client:
        job = finished(client, submit(client).json()["id"])
        assert job["state"] == "succeeded", job["error"]
        assert_problem(submit(client), 409, "style_exists")


def test_too_many_photos_are_refused(make_client) -> None:
    with make_client(embedded_worker=False, training_max_photos=2) as client:
        response = submit(client, photos=PHOTOS)
        assert_problem(response, 422, "invalid_parameter")
        assert "ATELIER_TRAINING_MAX_PHOTOS" in response.json()["detail"]


def test_a_long_training_job_never_blocks_a_gatys_job_on_the_embedded_worker(
    make_client,
) -> None:
    with make_client() as client:
        training = submit(client, iterations="5000", name="long-style").json()["id"]
        wait_for(
            lambda: client.get(f"/jobs/{training}").json()["progress"]["iteration"] >= 1,
            120,
            "training to start",
        )
        files = [
            ("content", ("c.png", png_bytes(64, 48, seed=1), "image/png")),
            ("style", ("s.png", png_bytes(48, 48, seed=2), "image/png")),
        ]
        gatys = client.post(
            "/jobs", files=files, data={"iterations": "4", "size": "48", "optimizer": "adam"}
        )
        assert gatys.status_code == 202, gatys.text
        assert finished(client, gatys.json()["id"])["state"] == "succeeded"
        assert client.get(f"/jobs/{training}").json()["state"] == "running"
        assert client.delete(f"/jobs/{training}").status_code == 200
        assert finished(client, training)["state"] == "cancelled"
