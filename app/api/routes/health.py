"""Liveness and readiness probes for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import ServiceDep
from app.api.problems import ProblemError, problem_responses

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    status: str
    styles: int | None = None
    device: str | None = None


@router.get("/live", response_model=Health, summary="The process is up")
async def live() -> Health:
    return Health(status="alive")


@router.get(
    "/ready",
    response_model=Health,
    summary="Models are loaded and warmed up",
    responses=problem_responses(503),
)
async def ready(service: ServiceDep) -> Health:
    if service.runner is None:
        detail = service.failed or "models are still loading"
        raise ProblemError(503, "not_ready", detail, headers={"Retry-After": "2"})
    return Health(status="ready", styles=len(service.catalog), device=str(service.runner.device))
