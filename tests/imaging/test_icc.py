"""Colour management: embedded ICC profiles are converted to sRGB before anything else.

The profiles are written in code (`icc_profiles`), and each expected picture comes from the
profile's maths in numpy, not from LittleCMS: a wide-gamut file is the sRGB original expressed in
that space, so decoding it must give the original back; a CMYK file's colours are the made-up
press's, computed in closed form.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import pattern, smooth
from PIL import Image

from app.imaging.decode import decode_image
from app.imaging.icc import SRGB_ICC
from tests.imaging.icc_profiles import (
    ADOBE_RGB,
    DISPLAY_P3,
    PROPHOTO,
    RgbSpace,
    cmyk_profile,
    convert_srgb,
    gray_profile,
    press_to_srgb,
    rgb_profile,
    srgb_encode,
)

LIMIT = 50_000_000
SPACES = [PROPHOTO, DISPLAY_P3, ADOBE_RGB]


def decode(data: bytes, **kwargs) -> np.ndarray:
    return decode_image(data, max_pixels=LIMIT, **kwargs).pixels


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def levels(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Mean and largest absolute difference, in 8-bit levels."""
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return float(diff.mean()), int(diff.max())


def wide_gamut(
    space: RgbSpace, width: int = 64, height: int = 48, original: np.ndarray | None = None
) -> tuple[np.ndarray, Image.Image]:
    """An sRGB picture, and the same picture stored in `space`."""
    original = pattern(width, height, seed=3) if original is None else original
    return original, Image.fromarray(convert_srgb(original, space))


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_wide_gamut_png_decodes_to_its_srgb_original(space: RgbSpace) -> None:
    original, stored = wide_gamut(space)
    # The stored numbers really are far from sRGB's: read as sRGB, the photo would be off.
    assert levels(np.asarray(stored), original)[0] > 5
    pixels = decode(save(stored, "PNG", icc_profile=rgb_profile(space)))
    mean, worst = levels(pixels, original)
    assert mean < 0.6 and worst <= 10  # 8-bit storage in the wider space rounds darks coarsely


def test_prophoto_jpeg_decodes_within_a_few_levels() -> None:
    original, stored = wide_gamut(PROPHOTO, original=smooth(96, 64))
    pixels = decode(save(stored, "JPEG", quality=95, icc_profile=rgb_profile(PROPHOTO)))
    assert levels(pixels, original)[0] < 2


def test_profile_applies_before_resizing_and_orientation() -> None:
    original, stored = wide_gamut(PROPHOTO, 80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = save(stored, "PNG", icc_profile=rgb_profile(PROPHOTO), exif=exif.tobytes())
    pixels = decode(data, max_size=20)
    expected = np.asarray(
        Image.fromarray(original).transpose(Image.Transpose.ROTATE_270).resize((10, 20))
    )
    assert pixels.shape == (20, 10, 3)
    assert levels(pixels, expected)[0] < 3


def test_alpha_survives_the_conversion_and_is_composited_on_white() -> None:
    original, stored = wide_gamut(PROPHOTO, 8, 2)
    rgba = stored.convert("RGBA")
    alpha = np.full((2, 8), 255, np.uint8)
    alpha[1] = 0
    rgba.putalpha(Image.fromarray(alpha))
    pixels = decode(save(rgba, "PNG", icc_profile=rgb_profile(PROPHOTO)))
    assert levels(pixels[0], original[0])[1] <= 10
    assert (pixels[1] == 255).all()


def test_grey_profile_is_applied() -> None:
    # A linear-light grey profile: stored 128 is half the light, which sRGB writes as 188.
    image = Image.new("L", (4, 4), 128)
    pixels = decode(save(image, "PNG", icc_profile=gray_profile(lambda v: v)))
    expected = round(float(srgb_encode(np.array(128 / 255))) * 255)
    assert expected == 188
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def cmyk_swatches() -> np.ndarray:
    """Flat 8x8 swatches of assorted ink mixes (flat so JPEG keeps them)."""
    rng = np.random.default_rng(7)
    inks = rng.integers(0, 256, size=(4, 6, 4)).astype(np.uint8)
    return np.repeat(np.repeat(inks, 8, axis=0), 8, axis=1)


@pytest.mark.parametrize(("fmt", "tolerance"), [("TIFF", 1.5), ("JPEG", 3.0)])
def test_cmyk_with_its_profile_keeps_the_press_colours(fmt: str, tolerance: float) -> None:
    cmyk = cmyk_swatches()
    expected = np.rint(press_to_srgb(cmyk / 255.0) * 255.0)
    image = Image.fromarray(cmyk, "CMYK")
    params = {"quality": 98} if fmt == "JPEG" else {}
    pixels = decode(save(image, fmt, icc_profile=cmyk_profile(), **params))
    # Pillow's profile-less conversion is far off for this press...
    naive = np.asarray(image.convert("RGB"))
    assert levels(naive, expected)[0] > 8
    # ...and the profile brings it to within the table's interpolation error.
    assert levels(pixels, expected)[0] < tolerance


def test_unreadable_profile_is_ignored_not_refused() -> None:
    pixels = pattern(16, 12)
    data = save(Image.fromarray(pixels), "PNG", icc_profile=b"not an icc profile at all")
    assert np.array_equal(decode(data), pixels)


def test_profile_for_another_colour_space_is_ignored() -> None:
    pixels = pattern(16, 12)
    data = save(Image.fromarray(pixels), "PNG", icc_profile=cmyk_profile(grid=2))
    assert np.array_equal(decode(data), pixels)


def test_own_srgb_profile_is_exact() -> None:
    pixels = pattern(16, 12)
    data = save(Image.fromarray(pixels), "PNG", icc_profile=SRGB_ICC)
    assert np.array_equal(decode(data), pixels)
