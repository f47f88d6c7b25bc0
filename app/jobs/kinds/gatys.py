"""Gatys jobs: optimise one image against a content photo and style images.

A run that runs out of memory fails with the size it was at; when the client allowed it
(`allow_downscale`), it is first retried once at `DOWNSCALE_FACTOR` times the size, and the job's
options say so (`downscaled_to`). The engine knows nothing of this: it is just called again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from app.core.device import uses_bf16
from app.gatys.optimize import GatysOptions, run
from app.imaging.encode import OutputFormat, encode_image
from app.jobs.kinds.base import JobContext, JobKind, JobResult, ProgressUpdate
from app.jobs.kinds.gatys_options import JobOptions, downscaled, options_from_json
from app.jobs.memory import JobOutOfMemory, is_out_of_memory, memory_kind, release_memory
from app.jobs.models import BlobKind
from app.jobs.stored_inputs import JobInputError, decode_stored

log = logging.getLogger("atelier.jobs.gatys")


class GatysKind(JobKind):
    name = "gatys"

    def run(self, context: JobContext) -> JobResult:
        content = decode_stored(context, context.inputs(BlobKind.content), "content image")[0]
        styles = decode_stored(
            context, context.inputs(BlobKind.style), "style image", numbered=True
        )
        try:
            options = options_from_json(context.job.options)
        except (TypeError, ValueError) as exc:
            raise JobInputError(f"the stored options are invalid: {exc}") from exc
        backbone = context.backbone(context.job.backbone or context.settings.gatys_backbone)
        bf16 = uses_bf16(context.settings.gatys_precision, context.device)

        def engine(gatys: GatysOptions) -> np.ndarray:
            return run(
                content,
                styles,
                gatys,
                backbone,
                device=context.device,
                bf16=bf16,
                tile_pixels=context.settings.gatys_tile_size**2,
                on_progress=lambda progress: context.report(ProgressUpdate.of(progress)),
                on_preview=context.save_preview,
                should_cancel=context.should_stop,
            )

        image = _optimise(context, options, engine)
        height, width = image.shape[:2]
        return JobResult(encode_image(image, OutputFormat.png), "image/png", width, height)


def _optimise(
    context: JobContext, options: JobOptions, engine: Callable[[GatysOptions], np.ndarray]
) -> np.ndarray:
    """Run the engine; after running out of memory, once more at a smaller size when the
    client allowed it and this job has not been downscaled yet."""
    first = options.effective
    try:
        return engine(first)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        kind = memory_kind(exc)
        log.warning("job %s: out of %s at %d px: %s", context.job.id, kind, first.output_size, exc)
        if options.downscaled_to is not None:
            raise JobOutOfMemory(
                _after_downscale(kind, first.output_size, options.gatys.output_size)
            ) from exc
        if not options.allow_downscale:
            raise JobOutOfMemory(
                f"out of {kind} at {first.output_size} px; retry with a smaller size or "
                "allow_downscale=true"
            ) from exc
        smaller = downscaled(first)
        if smaller is None:
            raise JobOutOfMemory(
                f"out of {kind} at {first.output_size} px, the smallest size; retry with "
                "fewer style images or a smaller style_scale"
            ) from exc
    # Outside the except block, so the failed run's frames (and tensors) can be freed.
    release_memory(context.device)
    context.set_options({**context.job.options, "downscaled_to": smaller.output_size})
    log.info("job %s: retrying at %d px", context.job.id, smaller.output_size)
    try:
        return engine(smaller)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise JobOutOfMemory(
            _after_downscale(memory_kind(exc), smaller.output_size, first.output_size)
        ) from exc


def _after_downscale(kind: str, size: int, original: int) -> str:
    return (
        f"out of {kind} at {size} px, even after downscaling from {original} px; retry with a "
        "smaller size, fewer scales or fewer style images"
    )
