"""Decoding a job's stored input images, with a failure that names the input."""

from __future__ import annotations

import numpy as np

from app.imaging.decode import ImageRejected, decode_image
from app.jobs.kinds.base import JobContext


class JobInputError(ValueError):
    """A stored input that cannot be used; the message is the job's readable reason."""


def decode_stored(
    context: JobContext, blobs: list[bytes], label: str, *, numbered: bool = False
) -> list[np.ndarray]:
    """RGB uint8 arrays of `blobs`; `label` names them in errors ("style image 2 is ...")."""
    images = []
    for index, data in enumerate(blobs):
        name = f"{label} {index + 1}" if numbered else label
        try:
            images.append(decode_image(data, max_pixels=context.settings.max_pixels).pixels)
        except ImageRejected as exc:
            raise JobInputError(f"the stored {name} is unusable: {exc}") from exc
    if not images:
        raise JobInputError(f"the job has no {label}")
    return images
