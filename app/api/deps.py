"""Every FastAPI dependency of the routes, and the `Annotated` aliases routes declare them with.

Routes never read `connection.app.state` themselves: they name what they need (`service:
ServiceDep`, `client: ClientDep`) and this module is the one place that knows where the
composition root (`app.main`) put it. The dependencies are `async def` because they never
block: FastAPI runs a plain `def` dependency on its thread pool, and several such hand-offs per
request cost more than the lookups themselves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from starlette.requests import HTTPConnection

from app.api.access import AccessControl, Client
from app.api.live_tokens import LiveSessions
from app.api.problems import ProblemError
from app.jobs.runtime import JobsRuntime
from app.observability.metrics import ServiceMetrics
from app.serving.runner import StyleRunner
from app.serving.service import Service
from app.styles.user_styles import UserStyleStore


async def get_service(connection: HTTPConnection) -> Service:
    return connection.app.state.service


async def get_runner(connection: HTTPConnection) -> StyleRunner:
    """The loaded networks, or 503 while the service is still warming up."""
    service: Service = connection.app.state.service
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


async def get_user_styles(connection: HTTPConnection) -> UserStyleStore:
    return connection.app.state.user_styles


async def get_access(connection: HTTPConnection) -> AccessControl:
    return connection.app.state.access


async def get_live(connection: HTTPConnection) -> LiveSessions:
    return connection.app.state.live


async def get_metrics(connection: HTTPConnection) -> ServiceMetrics:
    return connection.app.state.metrics


def identify(connection: HTTPConnection) -> Client:
    """The caller (401 without a valid key where keys are on), charged against its rate limit."""
    access: AccessControl = connection.app.state.access
    client = access.identify(connection)
    access.check_rate(client)
    return client


async def get_client(connection: HTTPConnection) -> Client:
    return identify(connection)


async def get_style_scope(
    connection: HTTPConnection, name: Annotated[str, Path(max_length=100)]
) -> str | None:
    """Whose styles the path's `name` may be looked up among. Built-in and installed styles are
    public (the studio shows them before any key is entered), so they need no key; any other
    name is a user style, private to its key exactly like using the style."""
    service: Service = connection.app.state.service
    return None if name in service.catalog else identify(connection).scope


def get_jobs(connection: HTTPConnection) -> JobsRuntime:
    """The job runtime, with its tables in place (created here if the database was down at
    start-up). Plain `def`: creating the tables talks to the database, off the event loop."""
    runtime: JobsRuntime = connection.app.state.jobs
    runtime.store.create_schema()
    return runtime


ServiceDep = Annotated[Service, Depends(get_service)]
RunnerDep = Annotated[StyleRunner, Depends(get_runner)]
UserStylesDep = Annotated[UserStyleStore, Depends(get_user_styles)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
AccessDep = Annotated[AccessControl, Depends(get_access)]
LiveDep = Annotated[LiveSessions, Depends(get_live)]
ClientDep = Annotated[Client, Depends(get_client)]
StyleScopeDep = Annotated[str | None, Depends(get_style_scope)]
JobsDep = Annotated[JobsRuntime, Depends(get_jobs)]
