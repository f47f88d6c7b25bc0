"""Hostile uploads: decompression bombs in every allowed format, and odd or broken files.

Each bomb is a few hundred bytes whose header declares a huge canvas. The service must answer
413 from the header alone: quickly, and without the process's peak memory growing by more than
200 MB (decoding any of them would need gigabytes).
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import assert_problem, image_bytes, png_header_only

PREDICT = "/model/predict?style=starry-swirls&max_size=64"
MAX_GROWTH_BYTES = 200 * 1024 * 1024


def peak_rss_bytes() -> int:
    """This process's high-water resident set (VmHWM) from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmHWM missing from /proc/self/status")


def jpeg_bomb(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring `width x height` with 3 components, EOI."""
    components = b"".join(bytes([index, 0x11, 0]) for index in (1, 2, 3))
    sof = struct.pack(">BHHB", 8, height, width, 3) + components
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def gif_bomb(width: int, height: int) -> bytes:
    """A GIF89a whose logical screen and single frame claim `width x height`."""
    screen = struct.pack("<HHBBB", width, height, 0xF0, 0, 0) + b"\x00" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x44\x01\x00" + b"\x3b"


def bmp_bomb(width: int, height: int) -> bytes:
    """BITMAPFILEHEADER + BITMAPINFOHEADER for a 24-bit `width x height` image, no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info), 0, 0, 14 + len(info))
    return header + info


def tiff_bomb(width: int, height: int) -> bytes:
    """A little-endian TIFF with one IFD: width, length, 8-bit RGB, one (missing) strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (262, 3, 1, 2),  # Photometric RGB
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 1),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def webp_bomb(width: int, height: int) -> bytes:
    """RIFF/WEBP with a VP8X chunk declaring a `width x height` canvas (max 16384 each)."""
    vp8x = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


BOMBS = {
    "png": png_header_only(30000, 30000),
    "jpeg": jpeg_bomb(30000, 30000),
    "gif": gif_bomb(65000, 65000),
    "bmp": bmp_bomb(30000, 30000),
    "tiff": tiff_bomb(30000, 30000),
    "webp": webp_bomb(16384, 16384),
}


def test_every_bomb_declares_what_we_think(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crafted headers really do parse as huge images (so the 413s below mean something)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    for fmt, data in BOMBS.items():
        if fmt == "webp":  # Pillow's WebP reader builds a decoder at open; read VP8X by hand
            width = int.from_bytes(data[24:27], "little") + 1
            height = int.from_bytes(data[27:30], "little") + 1
        else:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        assert width * height > 200_000_000, fmt


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_decompression_bombs_are_refused_from_the_header(client: TestClient, fmt: str) -> None:
    data = BOMBS[fmt]
    assert len(data) < 1024
    before = peak_rss_bytes()
    started = time.monotonic()
    response = client.post(PREDICT, files={"image": (f"bomb.{fmt}", data)})
    elapsed = time.monotonic() - started
    body = assert_problem(response, 413, "image_too_large")
    assert "ATELIER_MAX_PIXELS" in body["detail"]
    assert elapsed < 2.0
    assert peak_rss_bytes() - before < MAX_GROWTH_BYTES


def test_bombs_as_job_inputs_and_style_images_are_refused(client: TestClient) -> None:
    bomb = ("bomb.png", BOMBS["png"])
    photo = ("photo.png", image_bytes(40, 30))
    painting = client.post(PREDICT, files={"image": photo, "style_image": bomb})
    assert "style_image 1" in assert_problem(painting, 413, "image_too_large")["detail"]
    job = client.post("/jobs", files={"content": bomb, "style": photo}, data={"iterations": "2"})
    assert assert_problem(job, 413, "image_too_large")["detail"].startswith("content:")
    style = client.post("/model/styles", files={"image": bomb}, data={"name": "bomb"})
    assert_problem(style, 413, "image_too_large")


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (48, 32), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


ODD_FILES = {
    "zero-bytes": (b"", 400, "invalid_image"),
    "text": (b"hello, I am not an image\n" * 4, 400, "invalid_image"),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        400,
        "invalid_image",
    ),
    "truncated-jpeg": (image_bytes(64, 48, "JPEG")[:300], 400, "invalid_image"),
    "corrupt-png": (image_bytes(64, 48)[:60] + b"\x00" * 200, 400, "invalid_image"),
    "ico": (b"\x00\x00\x01\x00" + b"\x00" * 60, 400, "invalid_image"),
    "zlib-bomb-text": (zlib.compress(b"\x00" * 10_000_000), 400, "invalid_image"),
}


@pytest.mark.parametrize("name", sorted(ODD_FILES))
def test_odd_files_get_a_defined_4xx(client: TestClient, name: str) -> None:
    data, status, code = ODD_FILES[name]
    assert_problem(client.post(PREDICT, files={"image": (name, data)}), status, code)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1, 1), "1x1"), ((10000, 1), "64x1"), ((1, 3000), "1x64"), ((3, 2), "3x2")],
)
def test_tiny_and_extreme_images_give_a_defined_result(
    client: TestClient, size: tuple[int, int], expected: str
) -> None:
    response = client.post(PREDICT, files={"image": ("odd.png", image_bytes(*size))})
    assert response.status_code == 200, response.text
    assert response.headers["x-image-size"] == expected


def test_animated_gif_uses_the_first_frame(client: TestClient) -> None:
    response = client.post(
        "/model/predict?style=starry-swirls&strength=0&format=png",
        files={"image": ("anim.gif", animated_gif())},
    )
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        red, green, blue = image.convert("RGB").getpixel((24, 16))
    assert red > 200 and green < 60 and blue < 60  # strength 0 returns frame 1: red


@pytest.mark.parametrize(
    "query",
    [
        "style=..%2F..%2Fetc%2Fpasswd",
        "style=%2e%2e",
        "style=" + "a" * 5000,
        "strength=NaN",
        "strength=-0.5",
        "strength=1e309",
        "max_size=-1",
        "max_size=99999999999999999999",
        "max_size=abc",
        "format=gif",
        "preserve_color=maybe",
        "style=starry-swirls:NaN",
        "style=starry-swirls:-1",
        "style_weights=1,2",
    ],
)
def test_hostile_parameters_get_404_or_422(client: TestClient, query: str) -> None:
    response = client.post(f"/model/predict?{query}", files={"image": ("p.png", image_bytes(8, 8))})
    assert response.status_code in (404, 422), (query, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")


def test_path_characters_in_style_names(client: TestClient) -> None:
    for name in ("..", "%2e%2e", "..%2F..%2Fetc", "a%00b"):
        response = client.get(f"/model/styles/{name}/thumbnail")
        assert response.status_code == 404, name
