"""Colour operations applied after stylization: strength blend and colour preservation."""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 full-range (JPEG) RGB <-> YCbCr; Gatys colour preservation uses it too.
RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
_FROM_YCBCR = np.linalg.inv(RGB_TO_YCBCR).astype(np.float32)


def rgb_to_ycbcr(pixels: np.ndarray) -> np.ndarray:
    """uint8 or float RGB (0..255) -> float YCbCr with chroma centred on 0."""
    return pixels.astype(np.float32) @ RGB_TO_YCBCR.T


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_ycbcr`, clipped back to uint8."""
    rgb = ycbcr @ _FROM_YCBCR.T
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def preserve_color(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Keep the stylized luminance but the original's chroma (luminance-only transfer)."""
    styl = rgb_to_ycbcr(stylized)
    orig = rgb_to_ycbcr(original)
    return ycbcr_to_rgb(np.concatenate([styl[..., :1], orig[..., 1:]], axis=-1))


def blend(stylized: np.ndarray, original: np.ndarray, strength: float) -> np.ndarray:
    """Linear mix: strength 1 is the full style, 0 the untouched photo."""
    if strength >= 1.0:
        return stylized
    mixed = original.astype(np.float32) * (1.0 - strength) + stylized.astype(np.float32) * strength
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
