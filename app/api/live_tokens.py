"""Short-lived tokens that open a live WebSocket.

Browsers cannot set headers on a WebSocket, and an API key in a URL ends up in proxy and access
logs. So a client trades its key (header, as for every route) for a token at POST /live/token
and puts only the token in the socket's URL: signed with HMAC-SHA256, it names the client and
its expiry, carries no key material, and is useless after `live_token_ttl_s`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class InvalidToken(ValueError):
    """Malformed, forged or expired."""


@dataclass(frozen=True)
class LiveGrant:
    client_id: str
    authenticated: bool
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LiveTokens:
    def __init__(self, secret: str | None, ttl_s: int) -> None:
        self._key = secret.encode() if secret else secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def issue(self, client_id: str, authenticated: bool, *, now: float | None = None) -> str:
        expires = (now if now is not None else time.time()) + self.ttl_s
        payload = _b64(json.dumps({"c": client_id, "a": authenticated, "e": expires}).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, *, now: float | None = None) -> LiveGrant:
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidToken("the live token is not valid")
        try:
            claims = json.loads(_unb64(payload))
            grant = LiveGrant(str(claims["c"]), bool(claims["a"]), float(claims["e"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidToken("the live token is not valid") from exc
        if grant.expires_at < (now if now is not None else time.time()):
            raise InvalidToken("the live token has expired; ask POST /live/token for a new one")
        return grant

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


@dataclass
class LiveSessions:
    """One app's live bookkeeping: the token signer and the open-stream count against its limit."""

    tokens: LiveTokens
    limit: int
    open: int = 0
