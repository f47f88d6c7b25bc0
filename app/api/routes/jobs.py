"""/jobs: submit, watch, fetch and cancel Gatys optimisation jobs; a thin layer over JobStore.

Inputs are checked before a job is queued (options against the service limits, images fully
decoded), then stored already resized to what the engine will use, as PNG, so workers never see
an upload that could not run and the database holds no more pixels than needed.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field

from app.api.access import Client, may_access, require_client
from app.api.job_submission import check_pending, enqueue, invalid, normalised_png
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import FileList, unknown_style
from app.core.config import Settings
from app.gatys.optimize import GatysOptions
from app.imaging.encode import MEDIA_TYPES, OutputFormat, encode_image
from app.jobs.kinds.gatys_options import DOWNSCALE_FACTOR, options_to_json
from app.jobs.models import BlobKind, Job, JobState
from app.jobs.runtime import JobsRuntime
from app.jobs.store import JobNotFound, JobStore, NewJob
from app.styles.catalog import UnknownStyle

RESULT_CACHE_ENTRIES = 32  # re-encoded results kept; a 1024 px JPEG is ~0.3 MB
RESULT_SUFFIXES = {
    "application/octet-stream": ".pth",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/gif": ".gif",
    "image/webp": ".webp",
}


class JobsRoute(APIRoute):
    """Maps unknown ids to 404 for every job route, so each stays a few lines of happy path (an
    unreachable database is a 503 for every route: app.api.database)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except JobNotFound as exc:
                raise ProblemError(404, "job_not_found", str(exc)) from exc

        return handle


router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)


def get_jobs(request: Request) -> JobsRuntime:
    """The job runtime, with its tables in place (created here if the database was down at
    start-up)."""
    runtime: JobsRuntime = request.app.state.jobs
    runtime.store.create_schema()
    return runtime


def owned_job(jobs: JobsRuntime, job_id: str, client: Client) -> Job:
    """The job, or 404 when API keys are on and it belongs to another key (never 403, which
    would confirm the id exists)."""
    job = jobs.store.get(job_id)
    if not may_access(client.scope, job.owner):
        raise JobNotFound(job_id)
    return job


# --- resources ----------------------------------------------------------------------------------


class JobProgress(BaseModel):
    iteration: int = Field(description="Objective evaluations done so far.")
    total: int = Field(description="Evaluations the job will run.")
    percent: float
    content_loss: float | None
    style_loss: float | None
    tv_loss: float | None
    eta_s: float | None = Field(description="Estimated seconds left; null until measurable.")
    metrics: dict[str, float] | None = Field(
        None, description="Kind-specific numbers: `images_per_s` (training), `fps` (video)."
    )


class JobResource(BaseModel):
    id: str
    kind: str = Field(description="`gatys`, `training` or `video`.")
    state: JobState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: dict[str, Any] = Field(
        description="The engine options the job runs with, plus `allow_downscale` and, once a "
        "run that ran out of memory was retried smaller, `downscaled_to` (the output long side "
        "it was retried at)."
    )
    style_images: int
    backbone: str | None = Field(
        description="Feature network; `auto` until a worker resolves it; null for video."
    )
    device: str | None
    attempts: int = Field(description="Runs started; a job whose worker died is run again.")
    cancel_requested: bool
    progress: JobProgress
    timings: dict[str, float] | None = Field(
        description="Seconds: queued_s (waiting), run_s (loading and running), total_s; "
        "set when the job ends."
    )
    error: str | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> JobResource:
        base = f"/jobs/{job.id}"
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            options=job.options,
            style_images=job.style_count,
            backbone=job.backbone,
            device=job.device,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            progress=JobProgress(
                iteration=job.iteration,
                total=job.total,
                percent=job.percent,
                content_loss=job.content_loss,
                style_loss=job.style_loss,
                tv_loss=job.tv_loss,
                eta_s=job.eta_s,
                metrics=job.metrics,
            ),
            timings=job.timings,
            error=job.error,
            links={"self": base, "result": f"{base}/result", "preview": f"{base}/preview"},
        )


class JobPageResource(BaseModel):
    items: list[JobResource]
    total: int
    limit: int
    offset: int


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE = {"content": {media: _BINARY for media in MEDIA_TYPES.values()}}


# --- routes -------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=202,
    response_model=JobResource,
    summary="Submit a Gatys optimisation job",
    responses=problem_responses(400, 401, 404, 413, 422, 429, 503),
)
async def submit_job(
    request: Request,
    response: Response,
    content: Annotated[UploadFile, File(description="The photo to stylise.")],
    style: Annotated[FileList, File(description="One or more style images (paintings).")] = None,
    style_name: Annotated[
        str | None, Form(max_length=200, description="A catalog style with a reference image.")
    ] = None,
    iterations: Annotated[int | None, Form(ge=1, description="Objective evaluations.")] = None,
    size: Annotated[int | None, Form(ge=16, description="Output long side in pixels.")] = None,
    content_weight: Annotated[float | None, Form(ge=0)] = None,
    style_weight: Annotated[float | None, Form(ge=0)] = None,
    tv_weight: Annotated[float | None, Form(ge=0)] = None,
    optimizer: Annotated[Literal["lbfgs", "adam"], Form()] = "lbfgs",
    init: Annotated[Literal["content", "noise", "style"], Form()] = "content",
    seed: Annotated[int | None, Form(ge=0, lt=2**63)] = None,
    style_scale: Annotated[float, Form(gt=0, le=4, description="Style size / output size.")] = 1.0,
    preserve_color: Annotated[Literal["none", "luminance", "histogram"], Form()] = "none",
    style_weights: Annotated[
        str | None, Form(max_length=200, description="Comma list, one weight per style image.")
    ] = None,
    scales: Annotated[
        str | None, Form(max_length=200, description="Comma list of long sides, coarse to fine.")
    ] = None,
    preview_every: Annotated[
        int | None, Form(ge=0, description="Save a preview every N iterations; 0 = never.")
    ] = None,
    allow_downscale: Annotated[
        bool,
        Form(
            description=f"If the job runs out of (GPU) memory, retry it once at "
            f"{DOWNSCALE_FACTOR}x the size (scales too) instead of failing; the job's options "
            "then show `downscaled_to`."
        ),
    ] = False,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
) -> JobResource:
    settings = jobs.settings
    uploads = style or []
    _check_style_source(request, uploads, style_name, settings)
    options = _build_options(
        settings,
        len(uploads),
        iterations=iterations if iterations is not None else settings.job_default_iterations,
        size=size if size is not None else settings.job_default_size,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        optimizer=optimizer,
        init=init,
        seed=seed,
        style_scale=style_scale,
        preserve_color=preserve_color,
        style_blend=_parse_list(style_weights, float, "style_weights"),
        scales=_parse_list(scales, int, "scales"),
        preview_every=preview_every if preview_every is not None else settings.job_preview_every,
    )
    owner = client.id
    await check_pending(jobs, owner)
    budget = request.app.state.service.decode_budget
    content_png = await normalised_png(content, "content", options.output_size, settings, budget)
    style_side = options.style_side()
    style_pngs = [
        await normalised_png(upload, f"style image {index + 1}", style_side, settings, budget)
        for index, upload in enumerate(uploads)
    ]
    new = NewJob.gatys(
        options=options_to_json(options, allow_downscale=allow_downscale),
        backbone=settings.job_backbone,
        total=options.iterations,
        content=content_png,
        styles=style_pngs,
        owner=owner,
    )
    job = await enqueue(jobs, new, response)
    return JobResource.of(job)


@router.get(
    "",
    response_model=JobPageResource,
    summary="List this client's jobs, newest first",
    responses=problem_responses(401, 422, 429, 503),
)
def list_jobs(
    request: Request,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
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
    job_id: str,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
) -> JobResource:
    return JobResource.of(owned_job(jobs, job_id, client))


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    summary="Cancel a queued or running job (idempotent)",
    responses=problem_responses(401, 404, 429, 503),
)
def cancel_job(
    job_id: str,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
) -> JobResource:
    """A queued job is cancelled at once; a running one stops within about one iteration, so
    poll until `state` is `cancelled`. Finished jobs are returned unchanged. A job this answers
    with as `running` never succeeds afterwards, even if its last iteration was already done."""
    owned_job(jobs, job_id, client)
    return JobResource.of(jobs.store.request_cancel(job_id))


@router.get(
    "/{job_id}/result",
    response_class=Response,
    summary="The result of a succeeded job: an image (Gatys), weights (training) or a video",
    responses={200: _IMAGE, **problem_responses(401, 404, 409, 422, 429, 503)},
)
def job_result(
    job_id: str,
    format: Annotated[
        OutputFormat | None,
        Query(description="Image format of a Gatys result (default jpeg); other kinds ignore it."),
    ] = None,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
) -> Response:
    """Stored bytes are served as they are when no conversion is asked for; a Gatys result in
    another image format is encoded once and kept in a small cache (results never change)."""
    job = owned_job(jobs, job_id, client)
    stored = (
        jobs.store.stored_blob(job_id, BlobKind.result) if job.state is JobState.succeeded else None
    )
    if stored is None:
        detail = f"job {job_id} is {job.state.value}; the result exists once it has succeeded"
        if job.error:
            detail += f" (error: {job.error})"
        raise ProblemError(409, "job_not_succeeded", detail, extra={"state": job.state.value})
    if job.kind != "gatys":
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
    job_id: str,
    jobs: JobsRuntime = Depends(get_jobs),
    client: Client = Depends(require_client),
) -> Response:
    job = owned_job(jobs, job_id, client)
    data: bytes | None = None
    if job.state is JobState.succeeded and job.kind == "gatys":
        data = _encoded_result(jobs.store, job_id, OutputFormat.jpeg)[0]
    elif job.has_preview:
        preview = jobs.store.stored_blob(job_id, BlobKind.preview)
        data = preview.data if preview is not None else None
    if data is not None:
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    every = job.options.get("preview_every") or job.options.get("train", {}).get("preview_interval")
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


# --- helpers ------------------------------------------------------------------------------------


def _check_style_source(
    request: Request, uploads: list[UploadFile], style_name: str | None, settings: Settings
) -> None:
    if uploads and style_name:
        raise invalid("style_name", "give `style` images or `style_name`, not both")
    if style_name:
        try:
            found = request.app.state.service.catalog.get(style_name)
        except UnknownStyle as exc:
            raise unknown_style(exc.name, exc.available) from exc
        raise invalid(
            "style_name",
            f"style {found.name!r} is a trained network with no reference painting to "
            "optimise towards; upload the painting as one or more `style` images instead",
        )
    if not uploads:
        raise invalid("style", "upload at least one style image")
    if len(uploads) > settings.job_max_style_images:
        raise invalid(
            "style",
            f"{len(uploads)} style images; at most {settings.job_max_style_images} "
            "(ATELIER_JOB_MAX_STYLE_IMAGES)",
        )


def _parse_list(raw: str | None, kind: type[float] | type[int], field: str) -> Any:
    if raw is None or not raw.strip():
        return None
    try:
        return tuple(kind(part) for part in raw.split(","))
    except ValueError:
        noun = "numbers" if kind is float else "whole numbers"
        raise invalid(field, f"expected comma-separated {noun}, got {raw!r}") from None


def _build_options(settings: Settings, style_count: int, **values: Any) -> GatysOptions:
    """Service limits first (they name their setting), then the engine's own validation."""
    limits = {
        "iterations": (values["iterations"], settings.job_max_iterations, "JOB_MAX_ITERATIONS"),
        "size": (values["size"], settings.job_max_size, "JOB_MAX_SIZE"),
    }
    for field, (value, limit, setting) in limits.items():
        if value > limit:
            raise invalid(field, f"{value} exceeds the limit {limit} (ATELIER_{setting})")
    for scale in values["scales"] or ():
        if scale > settings.job_max_size:
            raise invalid(
                "scales",
                f"{scale} exceeds the limit {settings.job_max_size} (ATELIER_JOB_MAX_SIZE)",
            )
    blend = values["style_blend"]
    if blend is not None and len(blend) != style_count:
        raise invalid("style_weights", f"{len(blend)} weights for {style_count} style image(s)")
    try:
        options = GatysOptions(**values)
    except (TypeError, ValueError) as exc:
        raise ProblemError(422, "invalid_parameter", str(exc)) from exc
    style_side = options.style_side()
    if style_side > settings.job_max_size:
        raise invalid(
            "style_scale",
            f"style images would be {style_side} px on the long side; at most "
            f"{settings.job_max_size} (ATELIER_JOB_MAX_SIZE)",
        )
    return options


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


@functools.lru_cache(maxsize=RESULT_CACHE_ENTRIES)
def _encoded_result(
    store: JobStore, job_id: str, wanted: OutputFormat
) -> tuple[bytes, tuple[int, int]]:
    """A succeeded Gatys job's result as `wanted`, with its (width, height). A result never
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
