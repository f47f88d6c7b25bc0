"""Fixtures for the studio's browser tests: a real uvicorn server and Debian's chromium.

Playwright drives the system `chromium` package (never `playwright install`, which downloads a
browser). Test modules skip themselves when either is missing, so imports of playwright here stay
inside the fixtures.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from conftest import READY_TIMEOUT_S, make_settings
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
SERVER_START_TIMEOUT_S = 30


def require_browser() -> None:
    """Skip the calling test module, at import, unless playwright and the chromium it drives
    are installed (`make test` installs both as root)."""
    pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install playwright; the browser is Debian's "
        "chromium)",
    )
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)",
            allow_module_level=True,
        )


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: FastAPI

    def openapi_paths(self) -> dict[str, dict[str, object]]:
        return httpx.get(f"{self.url}/openapi.json", timeout=10).json()["paths"]


@contextmanager
def serve(settings: Settings, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[LiveServer]:
    """The whole service on 127.0.0.1 (free port), in a background thread, models loaded."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="studio-server", daemon=True
    )
    thread.start()
    try:
        _wait_for_start(server, thread)
        assert app.state.service.ready.wait(ready_timeout_s), "models did not load in time"
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)
        sock.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[LiveServer]:
    with serve(make_settings(tmp_path_factory.mktemp("studio-server"), cache_dir)) as server:
        yield server


def _wait_for_start(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots land here (git-ignored) for a human to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


OpenStudio = Callable[[int, int], "Page"]


def page_opener(browser: Browser, server: LiveServer) -> tuple[OpenStudio, Callable[[], None]]:
    """`open(width, height)` opens `/` of `server` in a fresh browser context; `close()` ends
    them all and fails on any uncaught script error the pages raised."""
    contexts = []
    script_errors: list[str] = []

    def open_page(width: int, height: int) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready=true]")
        return page

    def close() -> None:
        for context in contexts:
            context.close()
        assert not script_errors, f"script errors in the page: {script_errors}"

    return open_page, close


@pytest.fixture
def open_studio(browser: Browser, live_server: LiveServer) -> Iterator[OpenStudio]:
    """Opens `/` in a fresh browser context of the given viewport; fails the test on any
    uncaught script error in the page."""
    open_page, close = page_opener(browser, live_server)
    yield open_page
    close()
