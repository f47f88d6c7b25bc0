"""`decode_image`: every pixel mode, EXIF orientation, resizing, draft mode, and refusals.

Expected pixels are worked out by hand from how each format is defined (alpha compositing,
CMYK, 16-bit scaling), not from Pillow's or our own conversion code.
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import encode, pattern, png_chunk, png_header_only, smooth
from PIL import Image, ImageFile, JpegImagePlugin

from app.imaging.decode import ImageRejected, ImageTooLarge, decode_image, target_size

LIMIT = 50_000_000
WHITE = (255, 255, 255)


def decode(data: bytes, **kwargs) -> np.ndarray:
    kwargs.setdefault("max_pixels", LIMIT)
    result = decode_image(data, **kwargs)
    assert result.pixels.dtype == np.uint8
    assert result.pixels.ndim == 3 and result.pixels.shape[2] == 3
    return result.pixels


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Pixel modes
# --------------------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly() -> None:
    pixels = pattern(37, 23)
    assert np.array_equal(decode(encode(pixels, "PNG")), pixels)


def test_rgba_is_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    # Fully transparent red, half-transparent red, opaque blue.
    image.putpixel((0, 0), (255, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 128))
    image.putpixel((2, 0), (0, 0, 255, 255))
    pixels = decode(save(image, "PNG"))
    assert tuple(pixels[0, 0]) == WHITE
    # out = a * src + (1 - a) * white, a = 128/255: red stays 255, green/blue 255 * 127/255.
    assert pixels[0, 1, 0] == 255
    assert abs(int(pixels[0, 1, 1]) - 127) <= 1 and abs(int(pixels[0, 1, 2]) - 127) <= 1
    assert tuple(pixels[0, 2]) == (0, 0, 255)


def test_grayscale_with_alpha_is_composited_on_white() -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (40, 255))
    pixels = decode(save(image, "PNG"))
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[0, 1]) == (40, 40, 40)


def test_palette_with_transparent_index_is_composited_on_white() -> None:
    image = Image.new("P", (2, 2), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    image.putpixel((1, 1), 1)
    data = save(image, "PNG", transparency=0)  # index 0 (red) is transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    pixels = decode(data)
    assert tuple(pixels[0, 0]) == WHITE and tuple(pixels[1, 0]) == WHITE
    assert tuple(pixels[0, 1]) == (0, 0, 255) and tuple(pixels[1, 1]) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([10, 200, 30, 250, 5, 90] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    pixels = decode(save(image, "PNG"))
    assert tuple(pixels[0, 0]) == (10, 200, 30) and tuple(pixels[0, 1]) == (250, 5, 90)


def test_grayscale_l_becomes_equal_rgb_channels() -> None:
    gray = np.array([[0, 17, 128, 255]], dtype=np.uint8)
    pixels = decode(save(Image.fromarray(gray, "L"), "PNG"))
    assert pixels.shape == (1, 4, 3)
    for channel in range(3):
        assert pixels[..., channel].tolist() == gray.tolist()


def test_cmyk_tiff() -> None:
    image = Image.new("CMYK", (5, 1))
    colours = [(0, 255, 255, 0), (255, 255, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0), (51, 102, 0, 51)]
    for x, colour in enumerate(colours):
        image.putpixel((x, 0), colour)
    pixels = decode(save(image, "TIFF"))
    assert tuple(pixels[0, 0]) == (255, 0, 0)  # no cyan, full magenta + yellow = red
    assert tuple(pixels[0, 1]) == (0, 0, 255)  # cyan + magenta = blue
    assert tuple(pixels[0, 2]) == (0, 0, 0)  # key only = black
    assert tuple(pixels[0, 3]) == WHITE  # no ink = paper
    # Each channel = (255 - ink) * (255 - K) / 255: (204*204, 153*204, 255*204) / 255.
    expected = (204 * 204 / 255, 153 * 204 / 255, 255 * 204 / 255)
    assert np.allclose(pixels[0, 4], expected, atol=1.0)


def _png_16bit_gray(values: list[list[int]]) -> bytes:
    """A 16-bit greyscale PNG written byte by byte (colour type 0, bit depth 16)."""
    height, width = len(values), len(values[0])
    raw = b"".join(b"\x00" + struct.pack(f">{width}H", *row) for row in values)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def test_16bit_grayscale_png_is_scaled_from_65535() -> None:
    values = [[0, 257, 1000, 25700], [32768, 50000, 65280, 65535]]
    pixels = decode(_png_16bit_gray(values))
    # v * 255 / 65535, rounded: 257 -> 1, 1000 -> 3.89 -> 4, 25700 -> 100, 32768 -> 127.5 -> 128,
    # 50000 -> 194.55 -> 195, 65280 -> 254.0, 65535 -> 255.
    expected = [[0, 1, 4, 100], [128, 195, 254, 255]]
    assert pixels[..., 0].tolist() == expected
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_dark_16bit_grayscale_is_not_mistaken_for_8bit() -> None:
    """A 16-bit image whose values are all <= 255 is nearly black, not mid-grey."""
    pixels = decode(_png_16bit_gray([[0, 128, 255]]))
    assert pixels[0, :, 0].tolist() == [0, 0, 1]  # 128/257 = 0.498 -> 0, 255/257 = 0.99 -> 1


def test_one_bit_image() -> None:
    bits = Image.new("1", (3, 1), 0)
    bits.putpixel((1, 0), 1)
    pixels = decode(save(bits, "PNG"))
    assert [tuple(p) for p in pixels[0]] == [(0, 0, 0), WHITE, (0, 0, 0)]


def test_webp_and_bmp_are_accepted() -> None:
    pixels = pattern(20, 12)
    assert np.array_equal(decode(encode(pixels, "WEBP", lossless=True)), pixels)
    assert np.array_equal(decode(encode(pixels, "BMP")), pixels)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    pixels = decode(data)
    assert pixels.shape == (6, 8, 3)
    assert (pixels == (255, 0, 0)).all()


# --------------------------------------------------------------------------------------------
# Orientation and size
# --------------------------------------------------------------------------------------------


def test_exif_orientation_6_is_applied() -> None:
    """Orientation 6 = the stored image must be turned 90 degrees clockwise to be upright."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :] = (0, 0, 255)
    stored[:10, :10] = (255, 0, 0)  # red block at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    result = decode_image(data, max_pixels=LIMIT)
    pixels = result.pixels
    assert result.original_size == (40, 20)
    assert pixels.shape[:2] == (40, 20)  # now 20 wide, 40 tall
    # Turning clockwise carries the top-left corner to the top-right.
    top_right = pixels[1:8, -8:-1].reshape(-1, 3).mean(axis=0)
    top_left = pixels[1:8, 1:8].reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 200 and top_right[2] < 60
    assert top_left[2] > 200 and top_left[0] < 60


def test_target_size_by_hand() -> None:
    assert target_size(300, 200, 150) == (150, 100)
    assert target_size(301, 200, 150) == (150, 100)  # 200 * 150/301 = 99.67
    assert target_size(200, 300, 150) == (100, 150)
    assert target_size(100, 50, 100) == (100, 50)
    assert target_size(100, 50, None) == (100, 50)
    assert target_size(10000, 1, 1024) == (1024, 1)  # 0.1 px rounds up to the 1 px minimum


def test_under_max_size_is_untouched() -> None:
    pixels = pattern(37, 23)
    assert np.array_equal(decode(encode(pixels, "PNG"), max_size=1024), pixels)
    assert np.array_equal(decode(encode(pixels, "PNG"), max_size=37), pixels)


def test_over_max_size_keeps_aspect_ratio() -> None:
    result = decode_image(encode(pattern(301, 200), "PNG"), max_pixels=LIMIT, max_size=150)
    assert result.pixels.shape == (100, 150, 3)
    assert result.original_size == (301, 200)
    portrait = decode(encode(pattern(90, 240), "PNG"), max_size=64)
    assert portrait.shape == (64, 24, 3)  # 90 * 64/240 = 24


def test_resized_content_is_a_faithful_downscale() -> None:
    """Left half red, right half blue stays that way after a 4x reduction."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = (255, 0, 0)
    pixels[:, 40:] = (0, 0, 255)
    small = decode(encode(pixels, "PNG"), max_size=20)
    assert small.shape == (10, 20, 3)
    assert np.abs(small[:, :6].astype(int) - (255, 0, 0)).max() <= 1
    assert np.abs(small[:, 14:].astype(int) - (0, 0, 255)).max() <= 1


def test_tiny_image() -> None:
    pixels = decode(encode(np.array([[[12, 34, 56]]], dtype=np.uint8), "PNG"))
    assert pixels.tolist() == [[[12, 34, 56]]]


def test_extreme_aspect_ratio() -> None:
    line = np.zeros((1, 10000, 3), dtype=np.uint8)
    line[:, :, 1] = 200
    pixels = decode(encode(line, "PNG"), max_size=1024)
    assert pixels.shape == (1, 1024, 3)
    assert (pixels[..., 1] == 200).all()


def test_min_side_is_enforced() -> None:
    with pytest.raises(ImageRejected, match="each side"):
        decode_image(encode(pattern(40, 3), "PNG"), max_pixels=LIMIT, min_side=4)


def test_big_jpeg_is_decoded_in_draft_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[int, int]]] = []
    sizes_after: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append((mode, size))
        result = original(self, mode, size)
        sizes_after.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = Image.new("RGB", (4000, 3000), (30, 120, 210))
    data = save(big, "JPEG", quality=80)
    result = decode_image(data, max_pixels=LIMIT, max_size=500)
    assert result.pixels.shape == (375, 500, 3)
    assert result.original_size == (4000, 3000)
    assert len(calls) == 1
    mode, size = calls[0]
    assert mode == "RGB" and size[0] <= 1000 and size[1] <= 750 and size[0] >= 500
    # libjpeg scales by 1/2, 1/4 or 1/8: 4000 -> 500 needs 1/8, and must still cover 500 px.
    assert sizes_after[0] == (500, 375)
    assert np.allclose(result.pixels.reshape(-1, 3).mean(axis=0), (30, 120, 210), atol=3)


def test_small_jpeg_skips_draft_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    decode(encode(pattern(64, 48), "JPEG"), max_size=64)
    decode(encode(pattern(64, 48), "JPEG"))
    assert calls == []


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_declared_pixels_over_pillow_bomb_limit_are_refused_quickly() -> None:
    data = png_header_only(30000, 30000)
    assert len(data) < 4096
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        decode_image(data, max_pixels=LIMIT)
    assert time.perf_counter() - started < 1.0
    assert info.value.status == 413 and info.value.code == "image_too_large"


def test_pixel_limit_is_checked_before_any_pixel_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """8000x8000 = 64 Mpx: under Pillow's bomb threshold, over our 50 Mpx limit."""
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageTooLarge, match=r"8000x8000.*ATELIER_MAX_PIXELS"):
        decode_image(png_header_only(8000, 8000), max_pixels=LIMIT)
    assert loads == []
    # The same limit applies to a real, small image when the limit is lower still.
    with pytest.raises(ImageTooLarge):
        decode_image(encode(pattern(40, 30), "PNG"), max_pixels=40 * 30 - 1)
    assert decode(encode(pattern(40, 30), "PNG"), max_pixels=40 * 30).shape == (30, 40, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is just some text\n" * 10, "not a supported image"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
            b'height="10"><rect width="10" height="10" fill="red"/></svg>',
            "not a supported image",
        ),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not a supported image"),
    ],
    ids=["empty", "text", "svg", "pdf"],
)
def test_non_images_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ImageRejected, match=message) as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.status == 400 and info.value.code == "invalid_image"


def test_truncated_jpeg_is_rejected() -> None:
    data = encode(pattern(64, 64), "JPEG", quality=90)
    with pytest.raises(ImageRejected, match="corrupt or truncated") as info:
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert info.value.status == 400


def test_png_with_broken_pixel_data_is_rejected() -> None:
    data = png_header_only(64, 64)  # IDAT holds far fewer bytes than 64 rows need
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.status == 400


def test_draft_mode_does_not_change_the_output_size() -> None:
    pixels = pattern(640, 283)
    from_png = decode(encode(pixels, "PNG"), max_size=256)
    from_jpeg = decode(encode(pixels, "JPEG", quality=90), max_size=256)
    assert from_png.shape == (113, 256, 3)  # 283 * 256/640 = 113.2
    assert from_jpeg.shape == from_png.shape


# --------------------------------------------------------------------------------------------
# Phone formats: HEIC/HEIF and AVIF
# --------------------------------------------------------------------------------------------


def halves(width: int, height: int) -> np.ndarray:
    """Left half red, right half blue: where each half lands shows the orientation."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (230, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 230)
    return pixels


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_close_to_their_source(fmt: str) -> None:
    source = smooth(64, 48)
    result = decode_image(encode(source, fmt, quality=95), max_pixels=LIMIT)
    assert result.format == fmt
    assert result.pixels.shape == (48, 64, 3)
    assert np.abs(result.pixels.astype(int) - source).mean() < 2


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_are_turned_upright(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left (red) half ends on top
    pixels = decode(encode(halves(40, 20), fmt, quality=95, exif=exif.tobytes()))
    assert pixels.shape == (40, 20, 3)
    assert pixels[5, 10, 0] > 200 and pixels[5, 10, 2] < 60
    assert pixels[35, 10, 2] > 200 and pixels[35, 10, 0] < 60


def test_heic_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from pillow_heif.as_plugin import HeifImageFile

    data = encode(pattern(64, 48), "HEIF")

    def no_decoding(self: HeifImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(HeifImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match="64x48"):
        decode_image(data, max_pixels=64 * 48 - 1)


def test_heic_is_shrunk_to_max_size() -> None:
    pixels = decode(encode(pattern(96, 64), "HEIF"), max_size=48)
    assert pixels.shape == (32, 48, 3)
