"""FastAPI dependencies that hand route functions the running service's parts.

They are `async def` because they never block: FastAPI runs a plain `def` dependency on its
thread pool, and four such hand-offs per request cost more than the lookups themselves.
"""

from __future__ import annotations

from fastapi import Request

from app.api.access import Client, require_client
from app.api.problems import ProblemError
from app.serving.runner import StyleRunner
from app.serving.service import Service
from app.styles.user_styles import UserStyleStore


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_runner(request: Request) -> StyleRunner:
    """The loaded networks, or 503 while the service is still warming up."""
    service: Service = request.app.state.service
    if service.runner is None:
        if service.failed:
            raise ProblemError(503, "models_unavailable", service.failed)
        raise ProblemError(
            503,
            "warming_up",
            "models are still loading; retry shortly",
            headers={"Retry-After": "2"},
        )
    return service.runner


async def get_user_styles(request: Request) -> UserStyleStore:
    return request.app.state.user_styles


async def get_client(request: Request) -> Client:
    """`require_client` (keys and rate limit, in memory) on the event loop, not the pool."""
    return require_client(request)
