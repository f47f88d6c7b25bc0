"""Who is calling: optional API keys, per-client identity, and per-client rate limits.

Keys are compared as SHA-256 digests with `hmac.compare_digest` against every configured key,
so timing reveals neither which key matched nor how much of one. A client's identity (the
digest prefix of its key, or its IP when keys are off) owns the jobs and styles it creates.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.api.problems import ProblemError

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Client:
    id: str
    authenticated: bool

    @property
    def scope(self) -> str | None:
        """Whose data this client may read: its own with API keys on; None (everyone's) with
        keys off, where whoever reaches the service is the one trusted user."""
        return self.id if self.authenticated else None


def may_access(scope: str | None, owner: str | None) -> bool:
    """The owner check of every route that reads user-owned data (user styles, jobs, their
    images): keys off (`scope` None) sees all; a key sees only what it created. Callers answer
    404 when this is False, never 403, which would confirm the name or id exists."""
    return scope is None or owner == scope


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class AccessControl:
    def __init__(self, api_keys: Sequence[str], rate_limit: str | None) -> None:
        self._digests = [_digest(key) for key in api_keys if key]
        self._limit: RateLimitItem | None = parse(rate_limit) if rate_limit else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def identify(self, request: Request) -> Client:
        """The caller's identity; 401 when keys are on and none valid was given."""
        if not self._digests:
            host = request.client.host if request.client else "unknown"
            return Client(id=f"ip:{host}", authenticated=False)
        presented = request.headers.get(API_KEY_HEADER) or _bearer(request)
        if not presented:
            raise ProblemError(
                401,
                "missing_api_key",
                f"this service requires an API key in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise ProblemError(
                401,
                "invalid_api_key",
                "the API key is not valid",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Client(id=f"key:{digest.hex()[:16]}", authenticated=True)

    def check_rate(self, client: Client) -> None:
        """429 with Retry-After once `client` exceeds the configured rate."""
        if self._limit is None:
            return
        if self._limiter.hit(self._limit, client.id):
            return
        reset_at, _ = self._limiter.get_window_stats(self._limit, client.id)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise ProblemError(
            429,
            "rate_limited",
            f"rate limit {self._limit} exceeded; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
