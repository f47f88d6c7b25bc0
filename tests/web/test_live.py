"""The studio's Live panel in Debian's chromium with its fake camera: stylized frames arrive and
differ from the camera's, the counters move, the style switches in place, Stop closes the
socket; a bad token is refused; a client that stops reading does not grow server memory."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import struct
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from web.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer, require_browser

require_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402 (after the skip)

FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
LIVE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def camera_browser(browser: Browser) -> Iterator[Browser]:
    """A second chromium with a fake camera, from the session's Playwright (one per process)."""
    launched = browser.browser_type.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS + FAKE_CAMERA_ARGS
    )
    yield launched
    launched.close()


@pytest.fixture
def page(camera_browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = camera_browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["camera"], origin=live_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert not errors, errors


def frame_difference(page: Page) -> float:
    """Mean absolute RGB difference between the camera frame and the stylized frame, drawn
    side by side on canvases in the page."""
    return page.evaluate(
        """() => {
          const pixels = (source) => {
            const canvas = document.createElement("canvas");
            canvas.width = 160; canvas.height = 120;
            const context = canvas.getContext("2d");
            context.drawImage(source, 0, 0, 160, 120);
            return context.getImageData(0, 0, 160, 120).data;
          };
          const a = pixels(document.getElementById("live-camera"));
          const b = pixels(document.getElementById("live-output"));
          let total = 0;
          for (let i = 0; i < a.length; i += 4) {
            for (let c = 0; c < 3; c += 1) total += Math.abs(a[i + c] - b[i + c]);
          }
          return total / (a.length / 4 * 3);
        }"""
    )


def frames_shown(page: Page) -> int:
    return int(page.locator("#live-frames").inner_text())


def test_live_panel_streams_the_camera_stylized(page: Page, artifacts: Path) -> None:
    # Before the camera starts the stylized pane says what will appear: no broken-image icon.
    expect(page.locator("#live-output")).to_be_hidden()
    expect(page.locator("#live-placeholder")).to_be_visible()
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.select_option("#live-style", "starry-swirls")
    page.click("#live-start")
    expect(page.locator("#live")).to_have_attribute(
        "data-live-state", "live", timeout=LIVE_TIMEOUT_MS
    )
    page.wait_for_function(
        "() => Number(document.getElementById('live-frames').textContent) >= 5",
        timeout=LIVE_TIMEOUT_MS,
    )
    expect(page.locator("#live-output")).to_be_visible()
    expect(page.locator("#live-placeholder")).to_be_hidden()
    first_count = frames_shown(page)
    first_fps = page.locator("#live-fps").inner_text()
    assert float(first_fps) > 0
    assert page.locator("#live-latency").inner_text().endswith("ms")
    assert frame_difference(page) > 20  # stylized, not the camera picture
    page.wait_for_function(
        f"() => Number(document.getElementById('live-frames').textContent) >= {first_count + 5}",
        timeout=LIVE_TIMEOUT_MS,
    )
    page.screenshot(path=str(artifacts / "live.png"), full_page=False)
    page.locator("#live").screenshot(path=str(artifacts / "live-panel.png"))

    # The style switches on the same socket.
    page.select_option("#live-style", "golden-haze")
    switched_at = frames_shown(page)
    page.wait_for_function(
        f"() => Number(document.getElementById('live-frames').textContent) >= {switched_at + 5}",
        timeout=LIVE_TIMEOUT_MS,
    )
    assert len(sockets) == 1
    sent_styles = page.evaluate("() => document.getElementById('live-style').value")
    assert sent_styles == "golden-haze"

    # Stop closes the socket.
    assert not sockets[0].is_closed()
    page.click("#live-stop")
    expect(page.locator("#live")).to_have_attribute("data-live-state", "closed")
    page.wait_for_function("() => true")
    deadline = time.monotonic() + 10
    while not sockets[0].is_closed():
        assert time.monotonic() < deadline, "the socket stayed open after Stop"
        page.wait_for_timeout(100)


def test_a_bad_token_is_refused_in_the_browser(page: Page) -> None:
    outcome = page.evaluate(
        """() => new Promise((resolve) => {
          const socket = new WebSocket(`ws://${location.host}/live?token=forged.token`);
          let opened = false;
          socket.onopen = () => { opened = true; };
          socket.onclose = (event) => resolve({ opened, code: event.code, reason: event.reason });
        })"""
    )
    # A browser never sees an HTTP status on a WebSocket upgrade, so the server accepts and then
    # closes with 4401: the code is what a page can read and show.
    assert outcome["code"] == 4401
    assert "token" in outcome["reason"].lower()


def test_a_client_that_stops_reading_does_not_grow_server_memory(live_server: LiveServer) -> None:
    """Send large frames as fast as possible and never read a reply: the server keeps one
    waiting frame per connection, so its memory stays flat (it runs in this process)."""
    import websockets

    noise = np.random.default_rng(0).integers(0, 255, (540, 720, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    frame = buffer.getvalue()  # about 0.7 MB of incompressible JPEG, under the frame limit
    token = httpx.post(f"{live_server.url}/live/token", timeout=10).json()["token"]
    url = live_server.url.replace("http://", "ws://") + f"/live?token={token}"

    async def flood() -> int:
        sent = 0
        async with websockets.connect(url, max_size=None) as socket:
            json.loads(await socket.recv())  # the style and ready messages, then never again
            json.loads(await socket.recv())
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and sent < 250:
                try:
                    await asyncio.wait_for(socket.send(struct.pack(">I", sent) + frame), 2)
                except TimeoutError:
                    break  # backpressure: the server stopped reading us
                sent += 1
        return sent

    # Playwright's sync API owns this thread's event loop; the flood gets a thread of its own.
    # tracemalloc sees every Python allocation of the process, the server thread's included.
    tracemalloc.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sent = pool.submit(asyncio.run, flood()).result(timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent >= 5
    queued_mb = sent * len(frame) / 2**20  # what a server queueing every frame would hold
    peak_mb = peak / 2**20
    assert peak_mb < min(30.0, 0.3 * queued_mb), (
        f"peak {peak_mb:.0f} MB for {queued_mb:.0f} MB sent"
    )
