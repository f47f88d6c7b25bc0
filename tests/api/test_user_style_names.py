"""User style names belong to their API key: two keys may use one name, neither learns of the
other's style, and a blend naming one's own style says why it cannot blend."""

from __future__ import annotations

import numpy as np
from conftest import assert_problem, decode_rgb, encode, image_bytes, mean_abs_diff
from fastapi.testclient import TestClient

from tests.api.routes.test_training_jobs import PAINTING, PHOTOS, TINY

KEY_A = "alpha-key-0123456789"
KEY_B = "bravo-key-9876543210"
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
NAME = "my-painting"


def painting(seed: int) -> bytes:
    """Bold stripes in two colours picked by `seed`: paintings whose styles differ plainly."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    pixels[::8] = rng.integers(0, 256, 3)
    pixels[:, ::6] = rng.integers(0, 256, 3)
    return encode(pixels, "PNG")


def register(client: TestClient, headers: dict, seed: int, name: str = NAME):
    painting_file = {"image": ("p.png", painting(seed), "image/png")}
    return client.post("/model/styles", files=painting_file, data={"name": name}, headers=headers)


def stylized(client: TestClient, headers: dict, style: str) -> bytes:
    photo = {"image": ("photo.png", image_bytes(48, 32, seed=1), "image/png")}
    response = client.post(
        f"/model/predict?style={style}&max_size=48&format=png", files=photo, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.content


def train(client: TestClient, headers: dict, name: str = NAME):
    files = [("painting", ("painting.png", PAINTING, "image/png"))]
    files += [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
    return client.post("/jobs/training", data={**TINY, "name": name}, files=files, headers=headers)


def test_two_keys_each_own_a_style_of_the_same_name(make_client) -> None:
    with make_client(api_keys=f"{KEY_A},{KEY_B}", embedded_worker=False) as client:
        assert register(client, A, seed=9).status_code == 201
        # Before: 409 "a style named 'my-painting' already exists", telling B that A has one.
        second = register(client, B, seed=23)
        assert second.status_code == 201, second.text
        # Each key's name means its own painting.
        a_out, b_out = stylized(client, A, NAME), stylized(client, B, NAME)
        assert mean_abs_diff(decode_rgb(a_out), decode_rgb(b_out)) > 3
        a_thumb = client.get(f"/model/styles/{NAME}/thumbnail", headers=A).content
        b_thumb = client.get(f"/model/styles/{NAME}/thumbnail", headers=B).content
        assert a_thumb != b_thumb
        # A name a key already uses is a conflict for that key only.
        assert_problem(register(client, A, seed=5), 409, "style_exists")
        # Deleting B's leaves A's.
        assert client.delete(f"/model/styles/{NAME}", headers=B).status_code == 204
        assert_problem(
            client.get(f"/model/styles/{NAME}/thumbnail", headers=B), 404, "unknown_style"
        )
        assert stylized(client, A, NAME) == a_out


def test_training_under_another_keys_style_name_is_accepted(make_client) -> None:
    with make_client(api_keys=f"{KEY_A},{KEY_B}", embedded_worker=False) as client:
        assert register(client, A, seed=9).status_code == 201
        accepted = train(client, B)
        assert accepted.status_code == 202, accepted.text
        assert_problem(train(client, A), 409, "style_exists")


def test_a_blend_naming_ones_own_style_says_only_built_in_styles_blend(make_client) -> None:
    with make_client(api_keys=f"{KEY_A},{KEY_B}", embedded_worker=False) as client:
        assert register(client, A, seed=9).status_code == 201
        photo = {"image": ("photo.png", image_bytes(48, 32), "image/png")}
        blend = f"/model/predict?style={NAME}:0.5,crimson-fire:0.5&max_size=48"
        body = assert_problem(client.post(blend, files=photo, headers=A), 422, "invalid_style")
        assert "only built-in styles" in body["detail"] and NAME in body["detail"]
        # For another key the name stays unknown: nothing says A has such a style.
        assert_problem(client.post(blend, files=photo, headers=B), 404, "unknown_style")
