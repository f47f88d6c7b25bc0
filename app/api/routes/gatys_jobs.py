"""POST /jobs: submit a Gatys optimisation job.

Inputs are checked before a job is queued (options against the service limits, images fully
decoded), then stored already resized to what the optimisation will use, as PNG, so workers
never see an upload that could not run and the database holds no more pixels than needed.
Watching, fetching and cancelling are the same for every kind (app/api/routes/jobs.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import ClientDep, JobsDep, ServiceDep
from app.api.job_resources import JobResource, JobsRoute
from app.api.job_submission import check_pending, enqueue, invalid, normalised_png
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import FileList, unknown_style
from app.core.config import Settings
from app.core.number_lists import parse_numbers
from app.gatys.optimize import GatysOptions, InitName, OptimizerName, PreserveColor
from app.jobs.kinds.gatys_options import DOWNSCALE_FACTOR, options_to_json
from app.jobs.store import NewJob
from app.styles.catalog import StyleCatalog, UnknownStyle

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)


@router.post(
    "",
    status_code=202,
    response_model=JobResource,
    summary="Submit a Gatys optimisation job",
    responses=problem_responses(400, 401, 404, 413, 422, 429, 503),
)
async def submit_job(
    service: ServiceDep,
    jobs: JobsDep,
    client: ClientDep,
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
    optimizer: Annotated[OptimizerName, Form()] = "lbfgs",
    init: Annotated[InitName, Form()] = "content",
    seed: Annotated[int | None, Form(ge=0, lt=2**63)] = None,
    style_scale: Annotated[float, Form(gt=0, le=4, description="Style size / output size.")] = 1.0,
    preserve_color: Annotated[PreserveColor, Form()] = "none",
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
) -> JobResource:
    settings = jobs.settings
    uploads = style or []
    _check_style_source(service.catalog, uploads, style_name, settings)
    options = _build_options(
        settings,
        len(uploads),
        iterations=iterations if iterations is not None else settings.gatys_default_iterations,
        size=size if size is not None else settings.gatys_default_size,
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
    budget = service.decode_budget
    content_png = await normalised_png(content, "content", options.output_size, settings, budget)
    style_side = options.style_side()
    style_pngs = [
        await normalised_png(upload, f"style image {index + 1}", style_side, settings, budget)
        for index, upload in enumerate(uploads)
    ]
    new = NewJob.gatys(
        options=options_to_json(options, allow_downscale=allow_downscale),
        backbone=settings.gatys_backbone,
        total=options.iterations,
        content=content_png,
        styles=style_pngs,
        owner=owner,
    )
    job = await enqueue(jobs, new, response)
    return JobResource.of(job)


def _check_style_source(
    catalog: StyleCatalog, uploads: list[UploadFile], style_name: str | None, settings: Settings
) -> None:
    if uploads and style_name:
        raise invalid("style_name", "give `style` images or `style_name`, not both")
    if style_name:
        try:
            found = catalog.get(style_name)
        except UnknownStyle as exc:
            raise unknown_style(exc.name, exc.available) from exc
        raise invalid(
            "style_name",
            f"style {found.name!r} is a trained network with no reference painting to "
            "optimise towards; upload the painting as one or more `style` images instead",
        )
    if not uploads:
        raise invalid("style", "upload at least one style image")
    if len(uploads) > settings.gatys_max_style_images:
        raise invalid(
            "style",
            f"{len(uploads)} style images; at most {settings.gatys_max_style_images} "
            "(ATELIER_GATYS_MAX_STYLE_IMAGES)",
        )


def _parse_list(raw: str | None, kind: type[float] | type[int], field: str) -> Any:
    try:
        return parse_numbers(raw, kind)
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def _build_options(settings: Settings, style_count: int, **values: Any) -> GatysOptions:
    """Service limits first (they name their setting), then the engine's own validation."""
    limits = {
        "iterations": (values["iterations"], settings.gatys_max_iterations, "GATYS_MAX_ITERATIONS"),
        "size": (values["size"], settings.gatys_max_size, "GATYS_MAX_SIZE"),
    }
    for field, (value, limit, setting) in limits.items():
        if value > limit:
            raise invalid(field, f"{value} exceeds the limit {limit} (ATELIER_{setting})")
    for scale in values["scales"] or ():
        if scale > settings.gatys_max_size:
            raise invalid(
                "scales",
                f"{scale} exceeds the limit {settings.gatys_max_size} (ATELIER_GATYS_MAX_SIZE)",
            )
    blend = values["style_blend"]
    if blend is not None and len(blend) != style_count:
        raise invalid("style_weights", f"{len(blend)} weights for {style_count} style image(s)")
    try:
        options = GatysOptions(**values)
    except (TypeError, ValueError) as exc:
        raise ProblemError(422, "invalid_parameter", str(exc)) from exc
    style_side = options.style_side()
    if style_side > settings.gatys_max_size:
        raise invalid(
            "style_scale",
            f"style images would be {style_side} px on the long side; at most "
            f"{settings.gatys_max_size} (ATELIER_GATYS_MAX_SIZE)",
        )
    return options
