"""ASGI entry point: `app.main:app`, or `create_app(settings)` for tests and embedding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import health, predict, styles
from app.api.body_limit import BodySizeLimit
from app.api.problems import install_problem_handlers
from app.api.studio import mount_studio
from app.config import Settings, get_settings
from app.service import Service

DESCRIPTION = """
Neural style transfer as a service.

* **Instant**: `POST /model/predict` stylizes a photo with a pretrained feed-forward network.
* **Catalog**: `GET /model/styles` lists every style with a thumbnail.

Errors are `application/problem+json` with a machine-readable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        service.start_loading()
        yield
        service.close()

    app = FastAPI(
        title="Atelier",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    install_problem_handlers(app)
    app.include_router(predict.router)
    app.include_router(styles.router)
    app.include_router(health.router)

    mount_studio(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


app = create_app()
