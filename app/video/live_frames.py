"""One live webcam frame: JPEG in, stylized JPEG out (runs on an inference thread)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.imaging.decode import decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.serving.runner import StyleRunner
from app.styles.catalog import StyleChoice

LIVE_JPEG_QUALITY = 80  # frames are shown once and replaced: size beats fidelity


@dataclass(frozen=True)
class LiveFrame:
    jpeg: bytes
    width: int
    height: int
    elapsed_ms: float


def stylize_live_frame(
    runner: StyleRunner,
    data: bytes,
    choice: StyleChoice,
    *,
    strength: float,
    keep_colors: bool,
    max_size: int,
    max_pixels: int,
) -> LiveFrame:
    """Decode (JPEG draft mode when shrinking), stylize, encode; raises ImageRejected."""
    started = time.perf_counter()
    decoded = decode_image(data, max_pixels=max_pixels, max_size=max_size)
    pixels = runner.render(decoded.pixels, choice, strength=strength, keep_colors=keep_colors)
    jpeg = encode_image(pixels, OutputFormat.jpeg, quality=LIVE_JPEG_QUALITY)
    elapsed = (time.perf_counter() - started) * 1000.0
    return LiveFrame(jpeg, pixels.shape[1], pixels.shape[0], elapsed)
