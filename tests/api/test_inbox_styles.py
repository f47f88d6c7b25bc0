"""The Johnson styles Atelier trained itself and ships in models/: a fresh clone serves
`?style=mosaic` (and MAX's `?model=rain_princess`) offline with a TransformerNet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.weights.checkpoints import load_transformer_net
from tests.conftest import decode_rgb, encode, pattern
from tests.jobs.conftest import wait_for

MODELS = Path(__file__).resolve().parents[2] / "models"
INBOX = ("mosaic", "candy", "rain-princess", "udnie")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real models folder (the in-box weights), a throwaway data dir."""
    data = tmp_path_factory.mktemp("inbox-data")
    settings = Settings(data_dir=data, models_dir=MODELS, warmup=False, embedded_worker=False)
    with TestClient(create_app(settings)) as test_client:
        wait_for(lambda: test_client.get("/health/ready").status_code == 200, 120, "readiness")
        yield test_client


def test_every_inbox_style_is_committed_and_listed_once_answering_to_both_names(
    client: TestClient,
) -> None:
    listed = client.get("/model/styles").json()["styles"]
    names = [s["name"] for s in listed]
    assert len(names) == len(set(names))
    titles = [s["title"] for s in listed]
    assert len(titles) == len(set(titles)), "two tiles with the same title"
    styles = {s["name"]: s for s in listed}
    photo = encode(pattern(32, 32, seed=6))
    for name in INBOX:
        assert (MODELS / f"{name}-atelier.safetensors").is_file(), f"{name} weights missing"
        assert name not in styles, f"{name} is listed besides {name}-atelier"
        ours = styles[f"{name}-atelier"]
        assert ours["network"] == "transformer-net" and ours["origin"] == "local"
        assert ours["aliases"] == [name]
        by_alias = client.post(
            f"/model/predict?style={name}&format=png", files={"image": ("p.png", photo)}
        )
        by_name = client.post(
            f"/model/predict?style={name}-atelier&format=png", files={"image": ("p.png", photo)}
        )
        assert by_alias.status_code == by_name.status_code == 200
        assert by_alias.content == by_name.content


def test_mosaic_is_the_default_and_is_rendered_by_its_transformer_net(client: TestClient) -> None:
    photo = pattern(120, 88, seed=4)  # multiples of 4: no padding in the reference
    default = client.post("/model/predict?format=png", files={"image": ("p.png", encode(photo))})
    named = client.post(
        "/model/predict?style=mosaic&format=png", files={"image": ("p.png", encode(photo))}
    )
    assert default.status_code == named.status_code == 200
    assert default.content == named.content
    # The default is named as listed, so the studio finds its tile.
    body = client.get("/model/styles").json()
    assert body["default"] == "mosaic-atelier"
    assert [s["name"] for s in body["styles"] if s["default"]] == ["mosaic-atelier"]
    out = decode_rgb(named.content)
    assert out.shape == photo.shape, "the output keeps the photo's size"

    net = load_transformer_net(MODELS / "mosaic-atelier.safetensors")
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = net(x).clamp(0, 255)[0].permute(1, 2, 0).numpy()
    difference = np.abs(expected - out.astype(np.float32))
    assert difference.mean() < 2.0, f"not the mosaic network's output ({difference.mean():.2f})"
    assert np.abs(out.astype(np.float32) - photo).mean() > 10, "the photo came back unstyled"


def test_max_clients_underscore_names_resolve(client: TestClient) -> None:
    photo = encode(pattern(64, 64, seed=5))
    response = client.post("/model/predict?model=rain_princess", files={"image": ("p.png", photo)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
