"""`encode_image`: every output format decodes back, says it is sRGB, and carries no metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import smooth
from PIL import Image, ImageCms

from app.imaging.encode import MEDIA_TYPES, OutputFormat, encode_image

SIGNATURES = {
    OutputFormat.jpeg: (0, b"\xff\xd8\xff"),
    OutputFormat.png: (0, b"\x89PNG\r\n\x1a\n"),
    OutputFormat.webp: (8, b"WEBP"),
    OutputFormat.avif: (4, b"ftypavif"),
}


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_is_tagged_srgb_and_decodes_back(fmt: OutputFormat) -> None:
    pixels = smooth(48, 32)
    data = encode_image(pixels, fmt)
    offset, magic = SIGNATURES[fmt]
    assert data[offset : offset + len(magic)] == magic
    assert MEDIA_TYPES[fmt] == f"image/{fmt.value}"
    with Image.open(io.BytesIO(data)) as image:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        assert ImageCms.getProfileDescription(profile).strip().startswith("sRGB")
        assert not image.getexif()
        decoded = np.asarray(image.convert("RGB"))
    assert np.abs(decoded.astype(int) - pixels).mean() < 2
