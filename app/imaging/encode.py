"""Encode RGB arrays for HTTP responses: sRGB, tagged as such, and nothing else.

Every output carries the sRGB ICC profile its pixels were converted to (`app.imaging.icc`), so
colour-managed viewers show them as meant. No other metadata is written: pixels are already
upright, and location, camera and capture details of an upload never reach an output.
"""

from __future__ import annotations

import io
from enum import StrEnum

import numpy as np
from PIL import Image

from app.imaging.icc import SRGB_ICC


class OutputFormat(StrEnum):
    jpeg = "jpeg"
    png = "png"
    webp = "webp"
    avif = "avif"


MEDIA_TYPES: dict[OutputFormat, str] = {
    OutputFormat.jpeg: "image/jpeg",
    OutputFormat.png: "image/png",
    OutputFormat.webp: "image/webp",
    OutputFormat.avif: "image/avif",
}
# libavif's encoder speed (0 slowest .. 10): 8 stays near JPEG's time budget at equal quality.
AVIF_SPEED = 8


def encode_image(pixels: np.ndarray, fmt: OutputFormat, quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 array; PNG favours speed (level 1) since outputs are transient."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt is OutputFormat.jpeg:
        image.save(buffer, "JPEG", quality=quality, icc_profile=SRGB_ICC)
    elif fmt is OutputFormat.png:
        image.save(buffer, "PNG", compress_level=1, icc_profile=SRGB_ICC)
    elif fmt is OutputFormat.avif:
        image.save(buffer, "AVIF", quality=quality, speed=AVIF_SPEED, icc_profile=SRGB_ICC)
    else:
        image.save(buffer, "WEBP", quality=quality, method=2, icc_profile=SRGB_ICC)
    return buffer.getvalue()
