"""One instant prediction, bytes in to bytes out: decode, stylize, encode.

Runs entirely on an inference thread so the event loop never decodes or encodes images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.imaging.decode import ImageRejected, decode_image
from app.imaging.encode import OutputFormat, encode_image
from app.serving.runner import StyleRunner
from app.styles.catalog import StyleChoice, StyleVector

# The style predictor looks at a 256 px centre square; decoding paintings larger is wasted work.
STYLE_IMAGE_DECODE_SIZE = 512


@dataclass(frozen=True)
class PredictOptions:
    """`choice` names a catalog style; `style_images` (painting uploads) override it."""

    choice: StyleChoice | None
    max_size: int
    strength: float = 1.0
    keep_colors: bool = False
    output: OutputFormat = OutputFormat.jpeg
    style_images: tuple[bytes, ...] = ()
    style_weights: tuple[float, ...] | None = None


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
    choice = options.choice
    if options.style_images:
        choice = painting_style(
            runner, options.style_images, options.style_weights, max_pixels=max_pixels
        )
    if choice is None:
        raise ValueError("a style or at least one style image is required")
    pixels = runner.render(
        decoded.pixels, choice, strength=options.strength, keep_colors=options.keep_colors
    )
    inference_ms = (time.perf_counter() - started) * 1000.0
    data = encode_image(pixels, options.output)
    return PredictResult(data, pixels.shape[1], pixels.shape[0], inference_ms)


def painting_style(
    runner: StyleRunner,
    images: tuple[bytes, ...],
    weights: tuple[float, ...] | None,
    *,
    max_pixels: int,
) -> StyleVector:
    """Blend the style vectors of uploaded paintings (weights are normalised, equal if None)."""
    blend = weights or tuple(1.0 for _ in images)
    total = sum(blend)
    vector = None
    for number, (data, weight) in enumerate(zip(images, blend, strict=True), start=1):
        try:
            painting = decode_image(data, max_pixels=max_pixels, max_size=STYLE_IMAGE_DECODE_SIZE)
        except ImageRejected as exc:
            raise type(exc)(f"style_image {number}: {exc}") from exc
        part = runner.style_vector(painting.pixels) * (weight / total)
        vector = part if vector is None else vector + part
    assert vector is not None
    return StyleVector(vector)
