"""Colour preservation and the strength blend, against Pillow's YCbCr and hand arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.imaging.color import blend, preserve_color, rgb_to_ycbcr, ycbcr_to_rgb


def pil_ycbcr(pixels: np.ndarray) -> np.ndarray:
    """Pillow's (independent, integer) JPEG YCbCr conversion, as floats."""
    return np.asarray(Image.fromarray(pixels, "RGB").convert("YCbCr")).astype(np.float64)


def in_gamut_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stylized and original images whose mixed Y/CbCr stays inside the RGB cube (no clipping).

    With channels in 96..160, |Cb|, |Cr| <= 32 and Y is in 96..160, so every recombination
    lands within 0..255 and the chroma must survive exactly (up to rounding).
    """
    rng = np.random.default_rng(seed)
    stylized = rng.integers(96, 161, size=(24, 32, 3), dtype=np.uint8)
    original = rng.integers(96, 161, size=(24, 32, 3), dtype=np.uint8)
    return stylized, original


@pytest.mark.parametrize("seed", [0, 1])
def test_preserve_color_takes_luma_from_stylized_and_chroma_from_original(seed: int) -> None:
    stylized, original = in_gamut_pair(seed)
    result = preserve_color(stylized, original)
    assert result.shape == original.shape and result.dtype == np.uint8
    got, styl, orig = pil_ycbcr(result), pil_ycbcr(stylized), pil_ycbcr(original)
    # Pillow rounds each conversion to integers; ours rounds once more on the way back.
    assert np.abs(got[..., 0] - styl[..., 0]).max() <= 2
    assert np.abs(got[..., 1:] - orig[..., 1:]).max() <= 2
    # The chroma really changed hands: the stylized image's own chroma is far from the result's.
    assert np.abs(got[..., 1:] - styl[..., 1:]).mean() > 8


def test_preserve_color_on_grey_stylization_recolours_it() -> None:
    """A grey stylization of a reddish photo comes back reddish, with the grey's brightness."""
    stylized = np.full((4, 4, 3), 128, dtype=np.uint8)
    original = np.zeros((4, 4, 3), dtype=np.uint8)
    original[:] = (170, 110, 100)
    result = preserve_color(stylized, original)
    # By hand (BT.601 full range): Cb = -0.168736*170 - 0.331264*110 + 0.5*100 = -15.12,
    # Cr = 0.5*170 - 0.418688*110 - 0.081312*100 = 30.81; with Y = 128:
    # R = Y + 1.402 Cr = 171.2, G = Y - 0.344136 Cb - 0.714136 Cr = 111.2, B = Y + 1.772 Cb = 101.2
    assert np.abs(result.astype(int) - (171, 111, 101)).max() <= 1


def test_ycbcr_matches_pillow_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    ours = rgb_to_ycbcr(pixels)
    pil = pil_ycbcr(pixels)
    # Pillow's fixed-point conversion truncates where ours keeps fractions.
    assert np.abs(ours[..., 0] - pil[..., 0]).max() <= 1.5
    assert np.abs(ours[..., 1:] + 128.0 - pil[..., 1:]).max() <= 1.5
    assert np.abs(ycbcr_to_rgb(ours).astype(int) - pixels).max() <= 1


def test_blend_by_hand() -> None:
    stylized = np.array([[[200, 201, 255], [0, 10, 100]]], dtype=np.uint8)
    original = np.array([[[100, 100, 0], [255, 11, 100]]], dtype=np.uint8)
    assert np.array_equal(blend(stylized, original, 0.0), original)
    assert np.array_equal(blend(stylized, original, 1.0), stylized)
    # Half: (200+100)/2 = 150, (201+100)/2 = 150.5 -> 151, 127.5 -> 128, 127.5 -> 128,
    # 10.5 -> 11, 100.
    half = blend(stylized, original, 0.5)
    assert half.tolist() == [[[150, 151, 128], [128, 11, 100]]]
    # A quarter: 100 + 0.25*100 = 125, 100 + 0.25*101 = 125.25 -> 125, 63.75 -> 64,
    # 255 - 0.25*255 = 191.25 -> 191, 10.75 -> 11, 100.
    quarter = blend(stylized, original, 0.25)
    assert quarter.tolist() == [[[125, 125, 64], [191, 11, 100]]]
    assert half.dtype == np.uint8
