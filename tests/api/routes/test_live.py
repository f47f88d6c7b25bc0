"""The live WebSocket: tokens, the frame protocol, style switches, newest-frame-wins
backpressure, limits; and the token signer on its own."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import pytest
from conftest import assert_problem, decode_rgb, encode, mean_abs_diff, pattern
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from app.api.live_tokens import InvalidToken, LiveTokens

FRAME = struct.Struct(">I")
RESULT = struct.Struct(">II")


def camera_jpeg(seed: int = 0) -> bytes:
    return encode(pattern(320, 240, seed=seed), "JPEG", quality=85)


def token(client: TestClient, **headers: str) -> str:
    response = client.post("/live/token", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == f"/live?token={body['token']}" and body["expires_in"] > 0
    return body["token"]


def open_stream(client: TestClient, value: str) -> AbstractContextManager[WebSocketTestSession]:
    return client.websocket_connect(f"/live?token={value}")


def handshake(socket: WebSocketTestSession) -> None:
    assert json.loads(socket.receive_text())["type"] == "style"
    ready = json.loads(socket.receive_text())
    assert ready["type"] == "ready" and ready["max_size"] > 0


def test_frames_come_back_stylized_and_styles_switch(shared_client: TestClient) -> None:
    with open_stream(shared_client, token(shared_client)) as socket:
        handshake(socket)
        socket.send_bytes(FRAME.pack(7) + camera_jpeg())
        reply = socket.receive_bytes()
        frame_id, server_us = RESULT.unpack_from(reply)
        assert frame_id == 7 and server_us > 0
        first = decode_rgb(reply[RESULT.size :])
        assert first.shape == (240, 320, 3)
        camera = decode_rgb(camera_jpeg())
        assert mean_abs_diff(first, camera) > 20  # stylized, not the camera frame

        socket.send_text(json.dumps({"type": "style", "style": "golden-haze"}))
        assert json.loads(socket.receive_text()) == {"type": "style", "style": "golden-haze"}
        socket.send_bytes(FRAME.pack(8) + camera_jpeg())
        second = socket.receive_bytes()
        assert RESULT.unpack_from(second)[0] == 8
        assert mean_abs_diff(decode_rgb(second[RESULT.size :]), first) > 10


def test_bad_messages_get_errors_not_disconnects(shared_client: TestClient) -> None:
    with open_stream(shared_client, token(shared_client)) as socket:
        handshake(socket)
        socket.send_text(json.dumps({"type": "style", "style": "no-such-style"}))
        assert json.loads(socket.receive_text())["code"] == "unknown_style"
        socket.send_text("not json")
        assert json.loads(socket.receive_text())["code"] == "invalid_message"
        socket.send_bytes(FRAME.pack(3) + b"not a jpeg")
        error = json.loads(socket.receive_text())
        assert error["type"] == "error" and error["code"] == "invalid_image" and error["frame"] == 3
        socket.send_bytes(FRAME.pack(4) + camera_jpeg())
        assert RESULT.unpack_from(socket.receive_bytes())[0] == 4  # still serving


def test_newest_frame_wins_and_every_frame_is_answered(shared_client: TestClient) -> None:
    with open_stream(shared_client, token(shared_client)) as socket:
        handshake(socket)
        sent = list(range(1, 13))
        for frame_id in sent:
            socket.send_bytes(FRAME.pack(frame_id) + camera_jpeg(frame_id))
        answered: dict[int, str] = {}
        while len(answered) < len(sent):
            message = socket.receive()
            if message.get("bytes") is not None:
                answered[RESULT.unpack_from(message["bytes"])[0]] = "frame"
            else:
                body = json.loads(message["text"])
                answered[body["frame"]] = body["type"]
        assert sorted(answered) == sent
        assert answered[sent[-1]] == "frame"  # the newest is always served
        assert "dropped" in answered.values()  # and stale ones were not queued


@pytest.mark.parametrize("value", ["", "garbage", "a.b"])
def test_bad_tokens_are_refused(shared_client: TestClient, value: str) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, open_stream(shared_client, value) as socket:
        socket.receive_text()
    assert closed.value.code == 4401


def test_a_forged_or_expired_token_is_refused() -> None:
    tokens = LiveTokens("secret", ttl_s=60)
    good = tokens.issue("key:abc", True, now=1000.0)
    assert tokens.verify(good, now=1059.0).client_id == "key:abc"
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(good, now=1061.0)
    with pytest.raises(InvalidToken):
        LiveTokens("other", ttl_s=60).verify(good, now=1000.0)
    payload, _, signature = good.partition(".")
    with pytest.raises(InvalidToken):
        tokens.verify(payload[:-2] + "xx." + signature, now=1000.0)


def test_api_keys_apply_and_the_key_stays_out_of_the_token(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with make_client(api_keys="sekrit-key") as client:
        assert_problem(client.post("/live/token"), 401, "missing_api_key")
        value = token(client, **{"X-API-Key": "sekrit-key"})
        assert "sekrit" not in value
        with open_stream(client, value) as socket:
            handshake(socket)


def test_limits_close_with_clear_codes(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with (
        make_client(live_max_sessions=1, live_max_frame_bytes=2000) as client,
        open_stream(client, token(client)) as first,
    ):
        handshake(first)
        with open_stream(client, token(client)) as second:
            assert json.loads(second.receive_text())["code"] == "busy"
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_text()
            assert closed.value.code == 1013
        first.send_bytes(FRAME.pack(1) + camera_jpeg())  # about 20 kB
        assert json.loads(first.receive_text())["code"] == "frame_too_large"
        with pytest.raises(WebSocketDisconnect) as closed:
            first.receive_text()
        assert closed.value.code == 1009


def test_rate_limit_applies_to_tokens(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> None:
    with make_client(rate_limit="2/minute") as client:
        token(client)
        token(client)
        assert_problem(client.post("/live/token"), 429, "rate_limited")


def test_live_shares_the_inference_executor(shared_client: TestClient) -> None:
    """While a stream runs, instant predictions still get served (each stream holds at most
    one slot of the bounded executor)."""
    with open_stream(shared_client, token(shared_client)) as socket:
        handshake(socket)
        for frame_id in range(3):
            socket.send_bytes(FRAME.pack(frame_id) + camera_jpeg())
        response = shared_client.post(
            "/model/predict?style=starry-swirls&max_size=64",
            files={"image": ("p.png", encode(pattern(64, 48)))},
        )
        assert response.status_code == 200
        assert np.asarray(decode_rgb(response.content)).shape == (48, 64, 3)
