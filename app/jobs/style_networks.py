"""The loaded style networks that job kinds render with (video jobs), handed over by the runner.

An API process lends its own `Service` (loading the networks twice would double the memory);
a worker process without one loads a `Service` once per settings and keeps it for its life.
Kinds reach it through their `JobContext`, never through the API's composition root.
"""

from __future__ import annotations

import threading

from app.core.config import Settings
from app.serving.service import Service

SERVICE_READY_TIMEOUT_S = 300.0


class StyleNetworks:
    def __init__(self, lent: Service | None = None) -> None:
        """`lent`: an already-loading Service (the API process's) to use for its settings."""
        self._lent = lent
        self._loaded: list[tuple[Settings, Service]] = []
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> Service:
        """The networks for `settings`, once loaded; RuntimeError when they cannot load."""
        with self._lock:
            service = self._find(settings)
            if service is None:
                service = Service(settings)
                service.start_loading()
                self._loaded.append((settings, service))
        if not service.ready.wait(SERVICE_READY_TIMEOUT_S) or service.runner is None:
            raise RuntimeError(service.failed or "the style networks did not load in time")
        return service

    def _find(self, settings: Settings) -> Service | None:
        if self._lent is not None and self._lent.settings is settings:
            return self._lent
        return next((service for known, service in self._loaded if known is settings), None)


# A worker process's own networks, shared by every job it runs.
PROCESS_NETWORKS = StyleNetworks()
