"""Encode RGB arrays for HTTP responses."""

from __future__ import annotations

import io
from enum import StrEnum

import numpy as np
from PIL import Image


class OutputFormat(StrEnum):
    jpeg = "jpeg"
    png = "png"
    webp = "webp"


MEDIA_TYPES: dict[OutputFormat, str] = {
    OutputFormat.jpeg: "image/jpeg",
    OutputFormat.png: "image/png",
    OutputFormat.webp: "image/webp",
}


def encode_image(pixels: np.ndarray, fmt: OutputFormat, quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 array; PNG favours speed (level 1) since outputs are transient."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if fmt is OutputFormat.jpeg:
        image.save(buffer, "JPEG", quality=quality)
    elif fmt is OutputFormat.png:
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "WEBP", quality=quality, method=2)
    return buffer.getvalue()
