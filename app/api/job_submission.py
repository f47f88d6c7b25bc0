"""What every job-submitting route does the same way, whatever the kind: decoding uploads under
the shared decode budget, the per-client queue limit, storing and announcing the job (503 when
the broker is down), and field errors."""

from __future__ import annotations

from fastapi import Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.api.problems import ProblemError
from app.api.uploads import read_upload
from app.core.config import Settings
from app.imaging.decode import ImageRejected, decode_image
from app.imaging.decode_budget import DecodeBudget, reserve_decode
from app.imaging.encode import OutputFormat, encode_image
from app.jobs.models import Job
from app.jobs.runtime import JobsRuntime
from app.jobs.store import NewJob

BUSY_RETRY_AFTER_S = 30  # a queued job takes tens of seconds at least
BROKER_RETRY_AFTER_S = 5


def invalid(field: str, message: str) -> ProblemError:
    """422 naming the form field, in the shape FastAPI's own validation errors have."""
    return ProblemError(
        422,
        "invalid_parameter",
        f"{field}: {message}",
        extra={"errors": [{"field": field, "message": message}]},
    )


async def check_pending(jobs: JobsRuntime, owner: str) -> None:
    """429 when this client already has as many queued or running jobs as it may."""
    limit = jobs.settings.job_max_queued_per_client
    pending = await run_in_threadpool(jobs.store.count_pending, owner)
    if pending >= limit:
        raise ProblemError(
            429,
            "too_many_jobs",
            f"this client already has {pending} queued or running jobs (limit {limit}, "
            "ATELIER_JOB_MAX_QUEUED_PER_CLIENT); retry when one has finished",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )


async def enqueue(jobs: JobsRuntime, new: NewJob, response: Response) -> Job:
    """Store the job and tell its kind's runners; a job the broker refused is failed at once
    (so it never sits queued with no message) and the client gets 503."""
    job = await run_in_threadpool(jobs.store.create, new)
    try:
        await run_in_threadpool(jobs.announce, job.id, job.kind)
    except Exception as exc:
        reason = f"the job could not be queued: broker unavailable ({exc})"
        await run_in_threadpool(jobs.store.fail_unstarted, job.id, reason)
        raise ProblemError(
            503,
            "broker_unavailable",
            "the job queue is unreachable; retry shortly",
            headers={"Retry-After": str(BROKER_RETRY_AFTER_S)},
        ) from exc
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


async def normalised_png(
    upload: UploadFile, label: str, long_side: int, settings: Settings, budget: DecodeBudget
) -> bytes:
    """The upload decoded (400/413 on bad images, 503 when the decode budget is full) and
    shrunk to what the job will use, as PNG: workers never meet an upload that cannot run."""
    data = await read_upload(upload, settings.max_upload_bytes)
    try:
        return await run_in_threadpool(_to_png, data, long_side, settings, budget)
    except ImageRejected as exc:
        raise ProblemError(exc.status, exc.code, f"{label}: {exc}") from exc


def _to_png(data: bytes, long_side: int, settings: Settings, budget: DecodeBudget) -> bytes:
    with reserve_decode(budget, [(data, long_side)]):
        decoded = decode_image(
            data, max_pixels=settings.max_pixels, max_size=long_side, min_side=settings.min_side
        )
    return encode_image(decoded.pixels, OutputFormat.png)
