"""/jobs/{id}: list, watch, fetch and cancel jobs of every kind; a thin layer over JobStore.

Submitting is per kind (gatys_jobs, training_jobs, video_jobs); everything after that is the
same for all of them, and what differs (whether the result is an image, where the preview
interval lives) comes from the kind registry, not from branches here.
"""

from __future__ import annotations

import functools
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Response
from PIL import Image
from pydantic import BaseModel, Field

from app.api.deps import ClientDep, JobsDep
from app.api.job_resources import JobResource, JobsRoute, owned_job
from app.api.problems import ProblemError, problem_responses
from app.imaging.encode import MEDIA_TYPES, OutputFormat, encode_image
from app.jobs.kinds import kind_info
from app.jobs.models import BlobKind, JobState
from app.jobs.store import JobNotFound, JobStore

RESULT_CACHE_ENTRIES = 32  # re-encoded results kept; a 1024 px JPEG is ~0.3 MB
RESULT_SUFFIXES = {
    "application/octet-stream": ".pth",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/gif": ".gif",
    "image/webp": ".webp",
}


router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)


class HistoryPointResource(BaseModel):
    step: int
    content_loss: float
    style_loss: float
    tv_loss: float
    total_loss: float = Field(description="The sum of the three weighted terms.")


class JobHistoryResource(BaseModel):
    job_id: str
    points: list[HistoryPointResource] = Field(
        description="Mean weighted losses up to each step, oldest first; long jobs are thinned "
        "to a few hundred points."
    )
    last_step: int = Field(description="Pass as `after` next time to get only newer points.")


class JobPageResource(BaseModel):
    items: list[JobResource]
    total: int
    limit: int
    offset: int


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE = {"content": {media: _BINARY for media in MEDIA_TYPES.values()}}


@router.get(
    "",
    response_model=JobPageResource,
    summary="List this client's jobs, newest first",
    responses=problem_responses(401, 422, 429, 503),
)
def list_jobs(
    jobs: JobsDep,
    client: ClientDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JobPageResource:
    """Only the caller's own jobs (API key, else IP): a listing must not hand out other
    clients' job ids, which are what lets anyone fetch or cancel a job."""
    page = jobs.store.list_jobs(state=state, owner=client.id, limit=limit, offset=offset)
    return JobPageResource(
        items=[JobResource.of(job) for job in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{job_id}",
    response_model=JobResource,
    summary="A job's state and progress",
    responses=problem_responses(401, 404, 429, 503),
)
def get_job(
    jobs: JobsDep,
    client: ClientDep,
    job_id: str,
) -> JobResource:
    return JobResource.of(owned_job(jobs, job_id, client))


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    summary="Cancel a queued or running job (idempotent)",
    responses=problem_responses(401, 404, 429, 503),
)
def cancel_job(
    jobs: JobsDep,
    client: ClientDep,
    job_id: str,
) -> JobResource:
    """A queued job is cancelled at once; a running one stops within about one iteration, so
    poll until `state` is `cancelled`. Finished jobs are returned unchanged. A job this answers
    with as `running` never succeeds afterwards, even if its last iteration was already done."""
    owned_job(jobs, job_id, client)
    return JobResource.of(jobs.store.request_cancel(job_id))


@router.get(
    "/{job_id}/history",
    response_model=JobHistoryResource,
    summary="A job's loss curve: losses against steps, for polling with `after`",
    responses=problem_responses(401, 404, 422, 429, 503),
)
def job_history(
    jobs: JobsDep,
    client: ClientDep,
    job_id: str,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Only points past this step.")] = 0,
) -> JobHistoryResource:
    owned_job(jobs, job_id, client)
    points = jobs.store.history(job_id, after)
    return JobHistoryResource(
        job_id=job_id,
        points=[
            HistoryPointResource(
                step=point.step,
                content_loss=point.content_loss,
                style_loss=point.style_loss,
                tv_loss=point.tv_loss,
                total_loss=point.total_loss,
            )
            for point in points
        ],
        last_step=points[-1].step if points else after,
    )


@router.get(
    "/{job_id}/result",
    response_class=Response,
    summary="The result of a succeeded job: an image (Gatys), weights (training) or a video",
    responses={200: _IMAGE, **problem_responses(401, 404, 409, 422, 429, 503)},
)
def job_result(
    jobs: JobsDep,
    client: ClientDep,
    job_id: str,
    format: Annotated[
        OutputFormat | None,
        Query(description="Format of an image result (default jpeg); other results ignore it."),
    ] = None,
) -> Response:
    """Stored bytes are served as they are when no conversion is asked for; an image result in
    another format is encoded once and kept in a small cache (results never change)."""
    job = owned_job(jobs, job_id, client)
    stored = (
        jobs.store.stored_blob(job_id, BlobKind.result) if job.state is JobState.succeeded else None
    )
    if stored is None:
        detail = f"job {job_id} is {job.state.value}; the result exists once it has succeeded"
        if job.error:
            detail += f" (error: {job.error})"
        raise ProblemError(409, "job_not_succeeded", detail, extra={"state": job.state.value})
    if not kind_info(job.kind).image_result:
        suffix = RESULT_SUFFIXES.get(stored.media_type, "")
        return Response(
            stored.data,
            media_type=stored.media_type,
            headers={"Content-Disposition": f'attachment; filename="{job_id}{suffix}"'},
        )
    wanted = format or OutputFormat.jpeg
    data, (width, height) = _encoded_result(jobs.store, job_id, wanted)
    return Response(
        data,
        media_type=MEDIA_TYPES[wanted],
        headers={
            "Content-Disposition": f'inline; filename="{job_id}.{wanted.value}"',
            "X-Image-Size": f"{width}x{height}",
        },
    )


@router.get(
    "/{job_id}/preview",
    response_class=Response,
    summary="The latest preview (JPEG) of a job; the result once it has succeeded",
    responses={
        200: {"content": {"image/jpeg": _BINARY}},
        **problem_responses(401, 404, 409, 429, 503),
    },
)
def job_preview(
    jobs: JobsDep,
    client: ClientDep,
    job_id: str,
) -> Response:
    job = owned_job(jobs, job_id, client)
    data: bytes | None = None
    info = kind_info(job.kind)
    if job.state is JobState.succeeded and info.image_result:
        data = _encoded_result(jobs.store, job_id, OutputFormat.jpeg)[0]
    elif job.has_preview:
        preview = jobs.store.stored_blob(job_id, BlobKind.preview)
        data = preview.data if preview is not None else None
    if data is not None:
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    every = info.preview_interval(job.options)
    if job.state in (JobState.queued, JobState.running) and every:
        raise ProblemError(
            409,
            "preview_not_ready",
            f"job {job_id} has no preview yet; one is saved every {every} iterations",
            headers={"Retry-After": "2"},
        )
    raise ProblemError(
        404,
        "no_preview",
        f"job {job_id} has no preview ({job.state.value}; previews need a preview interval > 0)",
    )


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


@functools.lru_cache(maxsize=RESULT_CACHE_ENTRIES)
def _encoded_result(
    store: JobStore, job_id: str, wanted: OutputFormat
) -> tuple[bytes, tuple[int, int]]:
    """A succeeded job's image result as `wanted`, with its (width, height). A result never
    changes once stored, so each (job, format) is encoded at most once per cache lifetime."""
    stored = store.stored_blob(job_id, BlobKind.result)
    if stored is None:
        raise JobNotFound(job_id)
    pixels: np.ndarray | None = None
    if stored.width is None or stored.height is None:
        pixels = _pixels(stored.data)  # a result stored before dimensions were kept
        size = (pixels.shape[1], pixels.shape[0])
    else:
        size = (stored.width, stored.height)
    if stored.media_type == MEDIA_TYPES[wanted]:
        return stored.data, size
    pixels = _pixels(stored.data) if pixels is None else pixels
    return encode_image(pixels, wanted), size
