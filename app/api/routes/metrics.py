"""GET /metrics: Prometheus text format for this API process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.api.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    body, content_type = await run_in_threadpool(service_metrics.render)
    return Response(body, media_type=content_type)
