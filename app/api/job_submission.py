"""What every job-submitting route does the same way, whatever the kind: the per-client queue
limit, storing and announcing the job (503 when the broker is down), and field errors."""

from __future__ import annotations

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from app.api.problems import ProblemError
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
