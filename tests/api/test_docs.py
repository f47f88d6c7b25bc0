"""The docs page names no resource outside the service, and "Try it out" requests parse."""

from __future__ import annotations

import re

from conftest import image_bytes
from fastapi.testclient import TestClient

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def test_docs_page_loads_only_local_assets(shared_client: TestClient) -> None:
    page = shared_client.get("/docs")
    assert page.status_code == 200
    assets = ASSET.findall(page.text)
    assert len(assets) == 3, assets  # stylesheet, favicon, script
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        fetched = shared_client.get(url)
        assert fetched.status_code == 200 and fetched.content, url
    assert not re.search(r"https?://|//cdn", page.text), page.text


def test_redoc_is_not_offered(shared_client: TestClient) -> None:
    assert shared_client.get("/redoc").status_code == 404


def test_file_lists_render_as_file_pickers(shared_client: TestClient) -> None:
    schemas = shared_client.get("/openapi.json").json()["components"]["schemas"]
    prop = schemas["Body_predict_model_predict_post"]["properties"]["style_image"]
    array = next(option for option in prop["anyOf"] if option.get("type") == "array")
    assert array["items"] == {"type": "string", "format": "binary"}
    assert prop["default"] == []


def test_an_empty_style_image_field_means_none(shared_client: TestClient) -> None:
    """What Swagger UI sends when nobody picked a painting: `style_image=` as text."""
    response = shared_client.post(
        "/model/predict",
        params={"style": "crimson-fire", "max_size": 32},
        files=[("image", ("photo.png", image_bytes(40, 30), "image/png"))],
        data={"style_image": ""},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-image-size"] == "32x24"
