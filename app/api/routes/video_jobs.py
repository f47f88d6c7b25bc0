"""POST /jobs/video: queue a video or animated-image stylization job.

Everything that can be known before a frame is decoded is checked here, so a bad clip gets its
4xx now rather than a failed job later: the byte limit while reading, then the container and
stream headers (kind, size per frame, duration, frame count, audio the output can carry). The
job itself is watched, fetched and cancelled through the common /jobs/{id} routes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.deps import ClientDep, JobsDep, ServiceDep, UserStylesDep
from app.api.job_resources import JobResource, JobsRoute
from app.api.job_submission import check_pending, enqueue
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import (
    checked_max_size,
    parse_style_weights,
    read_style_images,
    resolve_style,
)
from app.imaging.decode_budget import DecodeBudget
from app.jobs.kinds.video import VideoJobOptions, VideoStyle
from app.jobs.models import BlobKind
from app.jobs.store import JobInput, NewJob
from app.video.encode import IncompatibleOutput, VideoFormat
from app.video.pipeline import VideoOptions, plan
from app.video.probe import MediaInfo, VideoLimits, VideoRejected
from app.video.stabilize import MAX_STABILIZE

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JobsRoute)

SOURCE_MEDIA_TYPE = "application/octet-stream"


@router.post(
    "/video",
    status_code=202,
    response_model=JobResource,
    summary="Submit a video or animated GIF/WebP to stylize every frame",
    responses=problem_responses(400, 401, 404, 413, 422, 429, 503),
)
async def submit_video_job(
    service: ServiceDep,
    user_styles: UserStylesDep,
    jobs: JobsDep,
    client: ClientDep,
    response: Response,
    video: Annotated[
        UploadFile,
        File(description="MP4/MOV (H.264, HEVC, AV1), WebM (VP8/VP9) or animated GIF/WebP."),
    ],
    style: Annotated[
        str | None,
        Form(max_length=200, description="Style name or blend, as for /model/predict."),
    ] = None,
    style_image: Annotated[
        list[UploadFile] | None,
        File(description="Painting(s) to use as the style; overrides `style`."),
    ] = None,
    style_weights: Annotated[
        str | None, Form(max_length=200, description="Blend weights for several paintings.")
    ] = None,
    max_size: Annotated[
        int | None, Form(ge=16, description="Output long side (default 640).")
    ] = None,
    strength: Annotated[float, Form(ge=0.0, le=1.0)] = 1.0,
    preserve_color: Annotated[bool, Form()] = False,
    format: Annotated[
        VideoFormat | None,
        Form(description="mp4 (default) or webm for videos; GIF/WebP keep their format."),
    ] = None,
    stabilize: Annotated[
        float | None,
        Form(
            ge=0.0,
            le=MAX_STABILIZE,
            description="Flow-guided temporal stabilization weight; 0 = plain per-frame.",
        ),
    ] = None,
) -> JobResource:
    settings = service.settings
    size = checked_max_size(max_size or settings.video_default_max_size, settings)
    paintings = await read_style_images(style_image or [], settings)
    weights = parse_style_weights(style_weights, len(paintings))
    owner = client.id if client.authenticated else None
    if paintings:
        video_style = VideoStyle(painting_weights=list(weights or [1.0] * len(paintings)))
    else:
        choice = await resolve_style(service, user_styles, style or service.default_style, owner)
        video_style = VideoStyle.of(choice)
    await check_pending(jobs, client.id)
    data = await video.read(settings.video_max_bytes + 1)
    if len(data) > settings.video_max_bytes:
        raise ProblemError(
            413,
            "upload_too_large",
            f"the clip exceeds {settings.video_max_bytes:,} bytes (ATELIER_VIDEO_MAX_BYTES)",
        )
    engine_options = VideoOptions(
        limits=VideoLimits.from_settings(settings), max_size=size, output=format
    )
    info = await run_in_threadpool(_checked, data, engine_options, service.decode_budget)
    options = VideoJobOptions(
        style=video_style,
        max_size=size,
        format=format,
        strength=strength,
        preserve_color=preserve_color,
        stabilize=settings.video_default_stabilize if stabilize is None else stabilize,
        source={
            "kind": info.kind.value,
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": round(info.duration_s, 3),
            "fps": round(info.fps, 3),
            "audio": info.audio.codec if info.audio else None,
        },
    )
    inputs = [JobInput(BlobKind.source, data, SOURCE_MEDIA_TYPE)]
    inputs += [JobInput(BlobKind.style, painting, SOURCE_MEDIA_TYPE) for painting in paintings]
    new = NewJob(
        options=options.to_json(),
        total=info.frames,
        inputs=inputs,
        kind="video",
        owner=client.id,
    )
    job = await enqueue(jobs, new, response)
    return JobResource.of(job)


def _checked(data: bytes, options: VideoOptions, budget: DecodeBudget) -> MediaInfo:
    """Probe the clip's headers (in a temporary file: FFmpeg reads from paths); the frame the
    probe decodes is held against the shared decode budget like any upload's."""
    with tempfile.NamedTemporaryFile(prefix="atelier-probe-") as handle:
        handle.write(data)
        handle.flush()
        try:
            info, _ = plan(Path(handle.name), options, budget.reserve)
        except VideoRejected as exc:
            raise ProblemError(exc.status, exc.code, str(exc)) from exc
        except IncompatibleOutput as exc:
            raise ProblemError(422, "invalid_parameter", str(exc)) from exc
    return info
