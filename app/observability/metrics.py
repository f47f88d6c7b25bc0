"""Prometheus metrics for one app instance.

Each app gets its own registry, so tests can build many apps in one process and a scrape shows
only this service's numbers. Labels use route templates (`/jobs/{job_id}`), never raw paths, to
keep cardinality bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "atelier_http_requests_total",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atelier_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "atelier_inference_seconds",
            "Network time of one instant prediction.",
            ["style", "network", "device"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "atelier_inference_queue_depth",
            "Predictions running or waiting for an inference slot.",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "atelier_jobs",
            "Gatys jobs by state.",
            ["state"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "atelier_job_duration_seconds",
            "Wall time of finished Gatys jobs run by this process.",
            ["state"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.gpu_memory = Gauge(
            "atelier_gpu_memory_allocated_bytes",
            "CUDA memory allocated by this process.",
            registry=self.registry,
        )
        self._refreshers: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Register a callback that updates gauges right before each scrape."""
        self._refreshers.append(refresh)

    def render(self) -> tuple[bytes, str]:
        for refresh in self._refreshers:
            refresh()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.gpu_memory.set(torch.cuda.memory_allocated())
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
