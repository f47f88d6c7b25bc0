"""Turn an uploaded painting into a reusable style: its style vector and a thumbnail."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.imaging.decode import decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.serving.predict import STYLE_IMAGE_DECODE_SIZE
from app.serving.runner import StyleRunner
from app.styles.catalog import StyleVector
from app.styles.thumbnails import reference_photo


@dataclass(frozen=True)
class RegisteredPainting:
    vector: torch.Tensor
    thumbnail: bytes


def analyse_painting(runner: StyleRunner, data: bytes, *, max_pixels: int) -> RegisteredPainting:
    """Decode, predict the style vector, and render the thumbnail every catalog style has."""
    painting = decode_image(data, max_pixels=max_pixels, max_size=STYLE_IMAGE_DECODE_SIZE)
    vector = runner.style_vector(painting.pixels)
    preview = runner.render(reference_photo(), StyleVector(vector))
    return RegisteredPainting(vector, encode_image(preview, OutputFormat.jpeg, quality=85))
