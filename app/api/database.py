"""The shared database as every route sees it: an outage is a 503 with Retry-After, and the
service recovers on its own when the database returns, tables included.

One exception handler covers every route that touches the database (jobs, user styles,
predictions with a user style), so no route needs its own try/except. Tables are created on
first use rather than only at start-up: a database that was down when the service started
gets them with the first request after it is back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.api.problems import ProblemError, problem_response
from app.observability.logs import log

DATABASE_RETRY_AFTER_S = 5
# Unreachable, dropped or saturated; not IntegrityError and the like, which are our own bugs.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)

T = TypeVar("T")


def database_unavailable() -> ProblemError:
    return ProblemError(
        503,
        "database_unavailable",
        "the database is unreachable; retry shortly",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def install_database_handlers(app: FastAPI) -> None:
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        problem = database_unavailable()
        return problem_response(
            problem.status, problem.code, problem.detail, headers=problem.headers
        )

    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, unavailable)


class HasSchema(Protocol):
    def create_schema(self) -> None:
        """Create (or migrate) the store's tables; cheap once it has succeeded."""


async def with_schema(store: HasSchema, call: Callable[..., T], *args: object) -> T:
    """`call(*args)` on the thread pool, after `store.create_schema()`: a database that was
    down at start-up gets its tables with the first request after it is back."""

    def run() -> T:
        store.create_schema()
        return call(*args)

    return await run_in_threadpool(run)
