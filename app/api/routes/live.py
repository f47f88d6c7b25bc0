"""The live webcam stream: POST /live/token, then a WebSocket at /live?token=...

Protocol (also in the README): the client sends a JSON text message
`{"type": "style", "style": "starry-swirls", "strength": 1, "preserve_color": false}` at any
time (the style switches without reconnecting), and binary frames: a 4-byte big-endian frame id
followed by a JPEG. Every frame gets exactly one answer: binary (the same 4-byte id, a 4-byte
server time in microseconds, the stylized JPEG), or a text `{"type": "dropped" | "busy" |
"error", "frame": id, ...}`.

Backpressure: each connection holds at most one waiting frame; a newer frame replaces it (the
older one is answered `dropped`), so the server never queues frames without bound and a client
sending faster than it is served only loses stale frames. Each connection has at most one frame
on the shared inference executor, so live streams and instant predictions take turns there, and
a send that a client does not read within LIVE_SEND_TIMEOUT_S closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketState

from app.api.access import Client
from app.api.deps import AccessDep, ClientDep, LiveDep, ServiceDep, UserStylesDep
from app.api.live_tokens import InvalidToken, LiveGrant
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import resolve_style
from app.core.config import Settings
from app.imaging.decode import ImageRejected
from app.serving.executor import ExecutorBusy
from app.serving.service import Service
from app.styles.catalog import StyleChoice
from app.styles.user_styles import UserStyleStore
from app.video.live_frames import stylize_live_frame

router = APIRouter(tags=["live"])

FRAME_HEADER = struct.Struct(">I")
RESULT_HEADER = struct.Struct(">II")
LIVE_SEND_TIMEOUT_S = 10.0
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
CLOSE_UNAUTHORIZED = 4401


def ws_max_size(settings: Settings) -> int:
    """The largest WebSocket message the server reads: one frame at the app's own limit. The
    server (uvicorn's `ws_max_size`) then refuses a larger one with close 1009 from its header,
    before buffering its bytes; its default would buffer up to 16 MiB."""
    return settings.live_max_frame_bytes + FRAME_HEADER.size


class LiveToken(BaseModel):
    token: str = Field(description="Put it in the WebSocket URL: /live?token=...")
    expires_in: int = Field(description="Seconds the token can open a stream.")
    url: str


@router.post(
    "/live/token",
    response_model=LiveToken,
    summary="A short-lived token that opens the live WebSocket",
    responses=problem_responses(401, 429),
)
def live_token(live: LiveDep, client: ClientDep) -> LiveToken:
    token = live.tokens.issue(client.id, client.authenticated)
    return LiveToken(token=token, expires_in=live.tokens.ttl_s, url=f"/live?token={token}")


@dataclass
class _Session:
    websocket: WebSocket
    service: Service
    user_styles: UserStyleStore
    grant: LiveGrant
    choice: StyleChoice | None = None
    strength: float = 1.0
    keep_colors: bool = False
    latest: tuple[int, bytes] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send_json(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await asyncio.wait_for(
                self.websocket.send_text(json.dumps(message)), LIVE_SEND_TIMEOUT_S
            )

    async def send_frame(self, frame_id: int, elapsed_us: int, jpeg: bytes) -> None:
        header = RESULT_HEADER.pack(frame_id, min(elapsed_us, 2**32 - 1))
        async with self.send_lock:
            await asyncio.wait_for(self.websocket.send_bytes(header + jpeg), LIVE_SEND_TIMEOUT_S)


@router.websocket("/live")
async def live_stream(
    websocket: WebSocket,
    service: ServiceDep,
    user_styles: UserStylesDep,
    access: AccessDep,
    live: LiveDep,
    token: str = "",
) -> None:
    settings = service.settings
    # Refusals accept first and then close with a code: a browser never sees the HTTP status of
    # a refused handshake (only a bare 1006), but it does read a close code and reason.
    try:
        grant = live.tokens.verify(token)
    except InvalidToken as exc:
        await _refuse(websocket, CLOSE_UNAUTHORIZED, str(exc))
        return
    try:
        access.check_rate(Client(grant.client_id, grant.authenticated))
    except ProblemError as exc:
        await _refuse(websocket, CLOSE_TRY_LATER, exc.detail)
        return
    await websocket.accept()
    if live.open >= live.limit or service.runner is None:
        reason = "too many live streams" if service.runner else "models are still loading"
        await websocket.send_text(json.dumps({"type": "error", "code": "busy", "detail": reason}))
        await websocket.close(code=CLOSE_TRY_LATER)
        return
    live.open += 1
    session = _Session(websocket, service, user_styles, grant)
    try:
        await _set_style(session, {"style": service.default_style})
        await session.send_json({"type": "ready", "max_size": settings.live_max_size})
        # Whichever ends first (client left, a send timed out, a bad frame) ends both.
        tasks = {
            asyncio.create_task(_receive(session, settings)),
            asyncio.create_task(_serve_frames(session)),
        }
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    except (WebSocketDisconnect, TimeoutError, RuntimeError):
        pass
    finally:
        live.open -= 1
        await _close_quietly(websocket)


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    # A close reason is at most 123 bytes of UTF-8.
    await websocket.close(code=code, reason=reason.encode()[:123].decode(errors="ignore"))


async def _close_quietly(websocket: WebSocket) -> None:
    """Close unless the client already left: closing a socket the client dropped raises
    WebSocketDisconnect (or RuntimeError once a close was sent), which is no error of ours."""
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close()


async def _receive(session: _Session, settings: Settings) -> None:
    """Read until the client leaves; keep only the newest frame."""
    while True:
        message = await session.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await _on_text(session, message["text"])
            continue
        data = message.get("bytes") or b""
        if len(data) > settings.live_max_frame_bytes + FRAME_HEADER.size:
            detail = (
                f"frames must be under {settings.live_max_frame_bytes:,} bytes "
                "(ATELIER_LIVE_MAX_FRAME_BYTES)"
            )
            await session.send_json({"type": "error", "code": "frame_too_large", "detail": detail})
            await session.websocket.close(code=CLOSE_TOO_BIG)
            return
        if len(data) <= FRAME_HEADER.size:
            await session.send_json({"type": "error", "code": "invalid_frame", "frame": None})
            continue
        (frame_id,) = FRAME_HEADER.unpack_from(data)
        replaced = session.latest
        session.latest = (frame_id, data[FRAME_HEADER.size :])
        session.arrived.set()
        if replaced is not None:
            await session.send_json({"type": "dropped", "frame": replaced[0]})


async def _on_text(session: _Session, text: str) -> None:
    try:
        message = json.loads(text)
        if not isinstance(message, dict) or message.get("type") != "style":
            raise ValueError("expected a JSON object with type 'style'")
        await _set_style(session, message)
    except ProblemError as exc:
        await session.send_json({"type": "error", "code": exc.code, "detail": exc.detail})
    except (ValueError, TypeError) as exc:
        await session.send_json({"type": "error", "code": "invalid_message", "detail": str(exc)})


async def _set_style(session: _Session, message: dict[str, Any]) -> None:
    spec = str(message.get("style") or session.service.default_style)
    strength = float(message.get("strength", 1.0))
    if not 0.0 <= strength <= 1.0:
        raise ValueError("strength must be between 0 and 1")
    owner = session.grant.client_id if session.grant.authenticated else None
    session.choice = await resolve_style(session.service, session.user_styles, spec, owner)
    session.strength = strength
    session.keep_colors = bool(message.get("preserve_color", False))
    await session.send_json({"type": "style", "style": spec})


async def _serve_frames(session: _Session) -> None:
    """Stylize the newest frame, answer it, repeat; one frame in flight per connection."""
    service = session.service
    settings = service.settings
    while True:
        await session.arrived.wait()
        session.arrived.clear()
        if session.latest is None or session.choice is None or service.runner is None:
            continue
        frame_id, data = session.latest
        session.latest = None
        job = partial(
            stylize_live_frame,
            service.runner,
            data,
            session.choice,
            strength=session.strength,
            keep_colors=session.keep_colors,
            max_size=settings.live_max_size,
            max_pixels=settings.max_pixels,
        )
        try:
            result = await service.executor.run(job)
        except ExecutorBusy as exc:
            await session.send_json(
                {"type": "busy", "frame": frame_id, "retry_after": exc.retry_after}
            )
            continue
        except ImageRejected as exc:
            await session.send_json(
                {"type": "error", "code": exc.code, "frame": frame_id, "detail": str(exc)}
            )
            continue
        await session.send_frame(frame_id, round(result.elapsed_ms * 1000), result.jpeg)
