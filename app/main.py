"""ASGI entry point: `app.main:app`, or `create_app(settings)` for tests and embedding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import SQLAlchemyError

from app import __version__
from app.api.access import AccessControl
from app.api.body_limit import BodySizeLimit
from app.api.database import install_database_handlers
from app.api.docs import documented_app
from app.api.live_tokens import LiveSessions, LiveTokens
from app.api.problems import install_problem_handlers
from app.api.routes import (
    gatys_jobs,
    health,
    jobs,
    live,
    metrics,
    predict,
    style_weights,
    styles,
    training_jobs,
    video_jobs,
)
from app.api.routes.studio import mount_studio
from app.core.config import Settings, get_settings
from app.jobs.runtime import JobsRuntime
from app.observability.logs import RequestIdMiddleware, log
from app.observability.metrics import MetricsMiddleware, ServiceMetrics
from app.serving.service import Service
from app.styles.user_styles import UserStyleStore

DESCRIPTION = """
Neural style transfer as a service.

* **Instant**: `POST /model/predict` stylizes a photo with a pretrained feed-forward network.
* **Catalog**: `GET /model/styles` lists every style with a thumbnail.
* **Jobs**: `POST /jobs` queues a Gatys optimisation with your own style images; poll
  `GET /jobs/{id}` for progress and fetch `GET /jobs/{id}/result`.

Errors are `application/problem+json` with a machine-readable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings)
    service_metrics = ServiceMetrics()
    job_runtime = JobsRuntime(
        settings,
        style_service=service,  # embedded video jobs reuse the loaded networks
        on_job_finished=lambda state, seconds: service_metrics.job_duration.labels(
            state.value
        ).observe(seconds),
    )
    user_styles = UserStyleStore(job_runtime.store.engine)
    service_metrics.on_scrape(lambda: service_metrics.queue_depth.set(service.executor.in_flight))
    service_metrics.on_scrape(lambda: _count_jobs(job_runtime, service_metrics))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        service.start_loading()
        job_runtime.start()
        try:
            user_styles.create_schema()
        except SQLAlchemyError as exc:
            log.error("user styles unavailable until the database is back: %s", exc)
        yield
        job_runtime.stop()
        service.close()

    app = documented_app(
        title="Atelier",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.jobs = job_runtime
    app.state.user_styles = user_styles
    app.state.access = AccessControl(settings.api_key_list, settings.rate_limit)
    app.state.metrics = service_metrics
    app.state.live = LiveSessions(
        LiveTokens(settings.live_token_secret, settings.live_token_ttl_s),
        settings.live_max_sessions,
    )
    install_problem_handlers(app)
    install_database_handlers(app)
    app.include_router(predict.router)
    app.include_router(styles.router)
    app.include_router(gatys_jobs.router)
    app.include_router(video_jobs.router)
    app.include_router(training_jobs.router)
    app.include_router(style_weights.router)
    app.include_router(jobs.router)
    app.include_router(live.router)
    app.include_router(health.router)
    app.include_router(metrics.router)

    mount_studio(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Location", "Retry-After", "X-Image-Size"],
        )
    app.add_middleware(MetricsMiddleware, metrics=service_metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


def _count_jobs(job_runtime: JobsRuntime, service_metrics: ServiceMetrics) -> None:
    """Jobs by state for the gauge; a scrape must not fail when the database is down."""
    try:
        counts = job_runtime.store.count_by_state()
    except SQLAlchemyError:
        return
    for state, count in counts.items():
        service_metrics.jobs.labels(state.value).set(count)


app = create_app()
