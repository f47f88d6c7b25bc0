"""POST /jobs/training: train a fast style network on a painting; poll it like any job.

The painting and any uploaded photos are decoded and shrunk here, before the job is queued, so
a worker never meets an upload that cannot run. A job with no photos uses the server's photo
folder (ATELIER_TRAINING_PHOTOS_DIR); with neither, the answer is a 422 that says how to give
some. On success the network becomes a style of the submitting client, named as asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.access import Client, require_client
from app.api.deps import get_user_styles
from app.api.job_submission import check_pending, enqueue, invalid, normalised_png
from app.api.problems import ProblemError, problem_responses
from app.api.routes.jobs import JobResource, JobsRoute, get_jobs
from app.api.routes.styles import check_new_style_name
from app.api.uploads import FileList
from app.jobs.kinds.training import TrainingJobOptions, photo_folder_files
from app.jobs.models import BlobKind
from app.jobs.runtime import JobsRuntime
from app.jobs.store import JobInput, NewJob
from app.styles.catalog import STYLE_NAME_MAX
from app.styles.user_styles import UserStyleStore
from app.training.options import MAX_STYLE_SIZE, TRAINING_BACKBONES, TrainOptions

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)


@router.post(
    "/training",
    status_code=202,
    response_model=JobResource,
    summary="Train a fast style network (Johnson et al.) on a painting",
    responses=problem_responses(400, 401, 409, 413, 422, 429, 503),
)
async def submit_training(
    request: Request,
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
    jobs: JobsRuntime = Depends(get_jobs),
    user_styles: UserStyleStore = Depends(get_user_styles),
    client: Client = Depends(require_client),
) -> JobResource:
    settings = jobs.settings
    await _check_name(request, user_styles, name, client)
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
    budget = request.app.state.service.decode_budget
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
    request: Request, user_styles: UserStyleStore, name: str, client: Client
) -> None:
    """422 for a malformed name, 409 for one the caller already uses: looked up where the new
    style will be written (names are per key), and checked again when it is saved."""
    check_new_style_name(request.app.state.service.catalog, name)
    user_styles.create_schema()
    if await run_in_threadpool(user_styles.get, name, client.id) is not None:
        raise ProblemError(409, "style_exists", f"you already have a style named {name!r}")
