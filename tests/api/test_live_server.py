"""The live WebSocket behind a real uvicorn server, as browsers meet it: refusals a browser can
read, client disconnects that log no error, and frames over the limit refused by the server
before their bytes are buffered. (Starlette's TestClient shows none of these: it has no HTTP
handshake, no network and no message size limit.)"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from conftest import READY_TIMEOUT_S, encode, make_settings, pattern
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.api.routes.live import ws_max_size
from app.core.config import Settings
from app.main import create_app

FRAME = struct.Struct(">I")
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class Server:
    http: str
    ws: str
    settings: Settings


class ErrorLog(logging.Handler):
    """Collects ERROR records of uvicorn's error logger (where "Exception in ASGI application"
    goes)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("live-server"), cache_dir)
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The limits `atelier serve` runs with.
    config = uvicorn.Config(app, log_config=None, lifespan="on", ws_max_size=ws_max_size(settings))
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not runner.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        assert app.state.service.ready.wait(READY_TIMEOUT_S), "models did not load in time"
        yield Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", settings)
    finally:
        runner.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
        sock.close()


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def live_token(server: Server) -> str:
    import httpx

    response = httpx.post(f"{server.http}/live/token", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def open_stream(server: Server, token: str) -> ClientConnection:
    return connect(f"{server.ws}/live?token={token}", open_timeout=10, max_size=None)


def handshake(stream: ClientConnection) -> None:
    assert json.loads(stream.recv(timeout=30))["type"] == "style"
    assert json.loads(stream.recv(timeout=30))["type"] == "ready"


def test_a_refused_token_is_a_close_code_a_browser_can_read(server: Server) -> None:
    # Browsers report a handshake refused with HTTP 403 only as close 1006, with no reason; the
    # handshake must succeed and the close carry the code.
    with open_stream(server, "forged.token") as stream, pytest.raises(ConnectionClosed) as closed:
        stream.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert "token" in closed.value.rcvd.reason


def test_clients_leaving_log_no_errors(server: Server, errors: ErrorLog) -> None:
    frame = FRAME.pack(1) + encode(pattern(160, 120), "JPEG")
    for session in range(8):
        with open_stream(server, live_token(server)) as stream:
            handshake(stream)
            stream.send(frame)
            if session % 2:
                stream.recv(timeout=30)  # the stylized frame; then a tab closes cleanly
            else:
                stream.socket.close()  # a network drop mid-frame: no close frame at all
    time.sleep(1.0)  # let the server notice the last one
    messages = [record.getMessage() for record in errors.records]
    assert messages == []


def test_a_frame_over_the_limit_is_refused_before_it_is_buffered(server: Server) -> None:
    limit = server.settings.live_max_frame_bytes
    with open_stream(server, live_token(server)) as stream:
        handshake(stream)
        stream.send(FRAME.pack(1) + bytes(2 * limit))
        # The server itself closes with 1009 (message too big) on the frame's header: the app
        # never receives the message, so it never answers it with its own error text.
        with pytest.raises(ConnectionClosed) as closed:
            stream.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_atelier_serve_passes_the_frame_limit_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli.commands import serve

    captured: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: captured.update(kwargs))
    monkeypatch.setenv("ATELIER_LIVE_MAX_FRAME_BYTES", "300000")
    from app.core.config import get_settings

    get_settings.cache_clear()
    try:
        serve(host=None, port=None, workers=1)
    finally:
        get_settings.cache_clear()
    assert captured["ws_max_size"] == 300000 + FRAME.size
