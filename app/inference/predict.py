"""One instant prediction, bytes in to bytes out: decode, stylize, encode.

Runs entirely on an inference thread so the event loop never decodes or encodes images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.imaging.decode import decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.inference.runner import StyleRunner
from app.styles.catalog import StyleChoice


@dataclass(frozen=True)
class PredictOptions:
    choice: StyleChoice
    max_size: int
    strength: float = 1.0
    keep_colors: bool = False
    output: OutputFormat = OutputFormat.jpeg


@dataclass(frozen=True)
class PredictResult:
    data: bytes
    width: int
    height: int
    inference_ms: float


def predict_bytes(
    runner: StyleRunner, upload: bytes, options: PredictOptions, *, max_pixels: int, min_side: int
) -> PredictResult:
    """Decode `upload`, render the style, encode; raises ImageRejected for bad uploads."""
    decoded = decode_image(
        upload, max_pixels=max_pixels, max_size=options.max_size, min_side=min_side
    )
    started = time.perf_counter()
    pixels = runner.render(
        decoded.pixels, options.choice, strength=options.strength, keep_colors=options.keep_colors
    )
    inference_ms = (time.perf_counter() - started) * 1000.0
    data = encode_image(pixels, options.output)
    return PredictResult(data, pixels.shape[1], pixels.shape[0], inference_ms)
