"""What every job route answers with, whatever the job's kind, and the route class that maps
unknown job ids to 404 for all of them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.api.access import Client, may_access
from app.api.problems import ProblemError
from app.core.progress import PROGRESS_FIELDS
from app.jobs.models import Job, JobState
from app.jobs.runtime import JobsRuntime
from app.jobs.store import JobNotFound


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


def owned_job(jobs: JobsRuntime, job_id: str, client: Client) -> Job:
    """The job, or 404 when API keys are on and it belongs to another key (never 403, which
    would confirm the id exists)."""
    job = jobs.store.get(job_id)
    if not may_access(client.scope, job.owner):
        raise JobNotFound(job_id)
    return job


class JobProgress(BaseModel):
    iteration: int = Field(
        description="Units of work done so far: objective evaluations (Gatys), optimiser steps "
        "(training) or frames (video)."
    )
    total: int = Field(description="Units of work the job will do.")
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
                percent=job.percent, **{name: getattr(job, name) for name in PROGRESS_FIELDS}
            ),
            timings=job.timings,
            error=job.error,
            links={"self": base, "result": f"{base}/result", "preview": f"{base}/preview"},
        )
