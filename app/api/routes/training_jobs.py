"""POST /jobs/training: train a fast style network on a painting; poll it like any job.

The painting and any uploaded photos are decoded and shrunk here, before the job is queued, so
a worker never meets an upload that cannot run. A job with no photos uses the server's photo
folder (ATELIER_TRAINING_PHOTOS_DIR); with neither, the answer is a 422 that says how to give
some. On success the network becomes a style of the submitting client, named as asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from app.api.access import Client
from app.api.deps import ClientDep, JobsDep, ServiceDep, UserStylesDep
from app.api.job_resources import JobResource, JobsRoute
from app.api.job_submission import check_pending, enqueue, invalid, normalised_png
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import FileList, check_new_style_name
from app.jobs.kinds.training import TrainingJobOptions, photo_folder_files
from app.jobs.models import BlobKind, JobState
from app.jobs.runtime import JobsRuntime
from app.jobs.store import JobInput, NewJob
from app.styles.catalog import STYLE_NAME_MAX, StyleCatalog
from app.styles.user_styles import UserStyleStore
from app.training.options import MAX_STYLE_SIZE, TRAINING_BACKBONES, TrainOptions
from app.training.presets import REFERENCE_CROP, Basis, PresetName, Throughput, presets

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)

RECENT_JOBS_MEASURED = 5  # finished training jobs looked at for a measured throughput


class TrainingPresetResource(BaseModel):
    name: PresetName
    title: str
    iterations: int
    batch_size: int
    crop_size: int
    estimate_s: float = Field(description="Estimated seconds of training on this server.")


class TrainingPresetsResource(BaseModel):
    presets: list[TrainingPresetResource]
    images_per_s: float = Field(description=f"Throughput at {REFERENCE_CROP} px crops.")
    basis: Basis = Field(
        description="`measured` by this server's latest training job, else `declared` "
        "(ATELIER_TRAINING_IMAGES_PER_S)."
    )
    photos_available: bool = Field(
        description="The server has training photos (ATELIER_TRAINING_PHOTOS_DIR), so a "
        "painting is all a job needs."
    )


@router.get(
    "/training/presets",
    response_model=TrainingPresetsResource,
    summary="The studio's training presets and how long each takes on this server",
    responses=problem_responses(401, 429, 503),
)
def training_presets(
    jobs: JobsDep,
    _client: ClientDep,
) -> TrainingPresetsResource:
    settings = jobs.settings
    throughput = _throughput(jobs)
    limit = settings.training_max_iterations
    chosen = presets(
        min(settings.training_quick_iterations, limit),
        min(settings.training_thorough_iterations, limit),
    )
    return TrainingPresetsResource(
        presets=[
            TrainingPresetResource(
                name=preset.name,
                title=preset.title,
                iterations=preset.options.iterations,
                batch_size=preset.options.batch_size,
                crop_size=preset.options.crop_size,
                estimate_s=round(throughput.seconds(preset.options), 1),
            )
            for preset in chosen
        ],
        images_per_s=round(throughput.images_per_s, 3),
        basis=throughput.basis,
        photos_available=bool(photo_folder_files(settings.training_photos_dir)),
    )


def _throughput(jobs: JobsRuntime) -> Throughput:
    """The latest finished training job's speed on this server (any client's: a rate says
    nothing about its owner), else the declared one."""
    recent = jobs.store.list_jobs(
        state=JobState.succeeded, kind="training", limit=RECENT_JOBS_MEASURED
    )
    for job in recent.items:
        rate = (job.metrics or {}).get("images_per_s", 0.0)
        crop = job.options.get("train", {}).get("crop_size")
        if rate > 0 and isinstance(crop, int):
            return Throughput.measured(rate, crop)
    return Throughput(jobs.settings.training_images_per_s, "declared")


@router.post(
    "/training",
    status_code=202,
    response_model=JobResource,
    summary="Train a fast style network (Johnson et al.) on a painting",
    responses=problem_responses(400, 401, 409, 413, 422, 429, 503),
)
async def submit_training(
    service: ServiceDep,
    jobs: JobsDep,
    user_styles: UserStylesDep,
    client: ClientDep,
    response: Response,
    painting: Annotated[UploadFile, File(description="The painting whose style to learn.")],
    name: Annotated[
        str,
        Form(
            max_length=STYLE_NAME_MAX,
            description="Name of the new style: lowercase words joined by hyphens.",
        ),
    ],
    photos: Annotated[
        FileList,
        File(description="Content photos to train on (default: the server's photo folder)."),
    ] = None,
    title: Annotated[str | None, Form(max_length=200)] = None,
    description: Annotated[str, Form(max_length=2000)] = "",
    iterations: Annotated[int | None, Form(ge=1, description="Training steps.")] = None,
    batch_size: Annotated[int, Form(ge=1)] = TrainOptions.batch_size,
    crop_size: Annotated[int, Form(description="Square crop side, a multiple of 4.")] = (
        TrainOptions.crop_size
    ),
    style_size: Annotated[int, Form(description="Painting long side for Gram targets.")] = (
        TrainOptions.style_size
    ),
    content_weight: Annotated[float | None, Form(ge=0)] = None,
    style_weight: Annotated[float | None, Form(ge=0)] = None,
    tv_weight: Annotated[float | None, Form(ge=0)] = None,
    learning_rate: Annotated[float, Form(gt=0)] = TrainOptions.learning_rate,
    seed: Annotated[int, Form(ge=0, lt=2**63)] = TrainOptions.seed,
    backbone: Annotated[
        str, Form(description=f"Loss network: {', '.join(TRAINING_BACKBONES)}.")
    ] = "auto",
    checkpoint_interval: Annotated[int, Form(ge=0)] = TrainOptions.checkpoint_interval,
    preview_interval: Annotated[int, Form(ge=0)] = TrainOptions.preview_interval,
    warm_start: Annotated[
        bool,
        Form(
            description="Begin from the server's starting style "
            "(ATELIER_TRAINING_WARM_START_STYLE) instead of random weights: far fewer steps."
        ),
    ] = TrainOptions.warm_start,
) -> JobResource:
    settings = jobs.settings
    await _check_name(service.catalog, user_styles, name, client)
    steps = iterations if iterations is not None else settings.training_default_iterations
    if steps > settings.training_max_iterations:
        raise invalid(
            "iterations",
            f"{steps} exceeds the limit {settings.training_max_iterations} "
            "(ATELIER_TRAINING_MAX_ITERATIONS)",
        )
    try:
        train = TrainOptions(
            iterations=steps,
            batch_size=batch_size,
            crop_size=crop_size,
            style_size=style_size,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            learning_rate=learning_rate,
            seed=seed,
            backbone=backbone,
            checkpoint_interval=checkpoint_interval,
            preview_interval=preview_interval,
            warm_start=warm_start,
        )
    except ValueError as exc:
        raise ProblemError(422, "invalid_parameter", str(exc)) from exc
    uploads = photos or []
    if len(uploads) > settings.training_max_photos:
        raise invalid(
            "photos",
            f"{len(uploads)} photos; at most {settings.training_max_photos} "
            "(ATELIER_TRAINING_MAX_PHOTOS)",
        )
    if not uploads and not photo_folder_files(settings.training_photos_dir):
        raise ProblemError(
            422,
            "no_training_photos",
            "no content photos: upload some as `photos` (repeat the field), or have the "
            "operator set ATELIER_TRAINING_PHOTOS_DIR to a folder of JPEG/PNG photos",
        )
    await check_pending(jobs, client.id)
    budget = service.decode_budget
    painting_png = await normalised_png(painting, "painting", MAX_STYLE_SIZE, settings, budget)
    inputs = [JobInput(BlobKind.style, painting_png)]
    for index, upload in enumerate(uploads):
        data = await normalised_png(
            upload, f"photo {index + 1}", settings.training_photo_side, settings, budget
        )
        inputs.append(JobInput(BlobKind.content, data))
    options = TrainingJobOptions(
        name=name,
        title=title or name.replace("-", " ").title(),
        description=description,
        train=train,
    )
    new = NewJob(
        options=options.to_json(),
        total=train.iterations,
        inputs=inputs,
        kind="training",
        backbone=backbone,
        owner=client.id,
    )
    return JobResource.of(await enqueue(jobs, new, response))


async def _check_name(
    catalog: StyleCatalog, user_styles: UserStyleStore, name: str, client: Client
) -> None:
    """422 for a malformed name, 409 for one the caller already uses: looked up where the new
    style will be written (names are per key), and checked again when it is saved."""
    check_new_style_name(catalog, name)
    user_styles.create_schema()
    if await run_in_threadpool(user_styles.get, name, client.id) is not None:
        raise ProblemError(409, "style_exists", f"you already have a style named {name!r}")
