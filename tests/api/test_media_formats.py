"""Photos as phones and editors make them, over HTTP: HEIC and AVIF accepted on every upload
path, wide-gamut and CMYK photos keep their colours (strength 0 returns the photo itself),
and outputs are sRGB, say so, and carry none of the upload's metadata."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from conftest import decode_rgb, encode, smooth
from fastapi.testclient import TestClient
from PIL import Image, ImageCms

from tests.api.routes.test_training_jobs import TINY
from tests.imaging.icc_profiles import (
    PROPHOTO,
    cmyk_profile,
    convert_srgb,
    press_to_srgb,
    rgb_profile,
)

PREDICT = "/model/predict"
PHONE_FORMATS = [("HEIF", "photo.heic", "image/heic"), ("AVIF", "photo.avif", "image/avif")]


def phone_photo(fmt: str, width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    pixels = np.roll(smooth(width, height), seed * 7, axis=1)
    return encode(pixels, fmt, quality=90)


def predict(client: TestClient, data: bytes, name: str, media: str, **params):
    return client.post(PREDICT, params=params, files={"image": (name, data, media)})


def mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.mark.parametrize(("fmt", "name", "media"), PHONE_FORMATS)
def test_heic_and_avif_photos_stylize(
    shared_client: TestClient, fmt: str, name: str, media: str
) -> None:
    response = predict(shared_client, phone_photo(fmt), name, media, style="crimson-fire")
    assert response.status_code == 200, response.text
    assert response.headers["x-image-size"] == "64x48"
    kept = predict(shared_client, phone_photo(fmt), name, media, strength=0, format="png")
    assert mean_levels(decode_rgb(kept.content), smooth(64, 48)) < 2


@pytest.mark.parametrize("fmt", ["avif", "webp"])
def test_avif_and_webp_outputs(shared_client: TestClient, fmt: str) -> None:
    response = predict(shared_client, encode(smooth(64, 48)), "p.png", "image/png", format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt}"
    assert decode_rgb(response.content).shape == (48, 64, 3)


def test_a_prophoto_jpeg_keeps_its_colours(shared_client: TestClient) -> None:
    original = smooth(96, 64)
    stored = convert_srgb(original, PROPHOTO)
    data = encode(stored, "JPEG", quality=95, icc_profile=rgb_profile(PROPHOTO))
    response = predict(shared_client, data, "p.jpg", "image/jpeg", strength=0, format="png")
    assert response.status_code == 200, response.text
    # Read as sRGB, the stored numbers are far off; converted, the photo comes back.
    assert mean_levels(stored, original) > 10
    assert mean_levels(decode_rgb(response.content), original) < 2


def test_a_cmyk_jpeg_keeps_its_press_colours(shared_client: TestClient) -> None:
    rng = np.random.default_rng(4)
    inks = np.repeat(np.repeat(rng.integers(0, 256, (4, 6, 4), np.uint8), 8, 0), 8, 1)
    buffer = io.BytesIO()
    Image.fromarray(inks, "CMYK").save(buffer, "JPEG", quality=98, icc_profile=cmyk_profile())
    data = buffer.getvalue()
    expected = np.rint(press_to_srgb(inks / 255.0) * 255.0)
    response = predict(shared_client, data, "p.jpg", "image/jpeg", strength=0, format="png")
    assert response.status_code == 200, response.text
    assert mean_levels(decode_rgb(response.content), expected) < 2


def test_outputs_are_tagged_srgb_upright_and_carry_no_metadata(shared_client: TestClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    exif[0x010F] = "PhoneMaker"  # camera make
    exif[0x0110] = "Phone 17 Pro"  # camera model
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS
    data = encode(smooth(64, 48), "JPEG", exif=exif.tobytes())
    for fmt in ("jpeg", "png", "webp", "avif"):
        response = predict(shared_client, data, "p.jpg", "image/jpeg", format=fmt, strength=0)
        assert response.status_code == 200, response.text
        assert response.headers["x-image-size"] == "48x64"
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == (48, 64)
            assert not image.getexif(), f"{fmt} output carries EXIF"
            assert b"PhoneMaker" not in response.content
            profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
            assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_a_heic_painting_registers_as_a_style(client: TestClient) -> None:
    painting = {"image": ("painting.heic", phone_photo("HEIF", 80, 80, 3), "image/heic")}
    response = client.post("/model/styles", files=painting, data={"name": "phone-painting"})
    assert response.status_code == 201, response.text


def test_heic_and_avif_are_accepted_by_gatys_and_training_jobs(make_client) -> None:
    with make_client(embedded_worker=False, job_max_queued_per_client=5) as client:
        gatys = client.post(
            "/jobs",
            files=[
                ("content", ("c.heic", phone_photo("HEIF"), "image/heic")),
                ("style", ("s.avif", phone_photo("AVIF", seed=2), "image/avif")),
            ],
            data={"iterations": "2", "size": "32"},
        )
        assert gatys.status_code == 202, gatys.text
        files = [("painting", ("p.avif", phone_photo("AVIF", 80, 80, 3), "image/avif"))]
        files += [
            ("photos", (f"p{i}.heic", phone_photo("HEIF", 96, 72, i), "image/heic"))
            for i in range(2)
        ]
        training = client.post("/jobs/training", data={**TINY, "name": "phone"}, files=files)
        assert training.status_code == 202, training.text


def test_a_heic_live_frame_is_stylized(shared_client: TestClient) -> None:
    token = shared_client.post("/live/token").json()["token"]
    with shared_client.websocket_connect(f"/live?token={token}") as socket:
        assert json.loads(socket.receive_text())["type"] == "style"
        assert json.loads(socket.receive_text())["type"] == "ready"
        socket.send_bytes(struct.pack(">I", 5) + phone_photo("HEIF", 160, 120))
        reply = socket.receive_bytes()
        assert struct.unpack_from(">I", reply)[0] == 5
        assert decode_rgb(reply[8:]).shape == (120, 160, 3)
