"""Shared request steps: read an upload within its limit, resolve a style, run inference."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import UploadFile

from app.api.problems import ProblemError
from app.imaging.decode import ImageRejected
from app.inference.executor import ExecutorBusy
from app.service import Service
from app.styles.catalog import InvalidBlend, StyleChoice, UnknownStyle

T = TypeVar("T")


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The file's bytes, or 413 as soon as it is known to exceed `max_bytes`."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ProblemError(
            413,
            "upload_too_large",
            f"{upload.filename or 'the upload'} exceeds {max_bytes:,} bytes "
            "(ATELIER_MAX_UPLOAD_BYTES)",
        )
    return data


def resolve_style(service: Service, spec: str) -> StyleChoice:
    try:
        return service.catalog.resolve(spec)
    except UnknownStyle as exc:
        raise ProblemError(
            404,
            "unknown_style",
            f"no style named {exc.name!r}; available: {', '.join(exc.available)}",
            extra={"available": exc.available},
        ) from exc
    except InvalidBlend as exc:
        raise ProblemError(422, "invalid_style", str(exc)) from exc


async def run_inference(service: Service, fn: Callable[..., T], *args: object) -> T:
    """Run on the bounded executor; map overload and bad images to problem responses."""
    try:
        return await service.executor.run(fn, *args)
    except ExecutorBusy as exc:
        raise ProblemError(
            503,
            "busy",
            "all inference slots are busy; retry shortly",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    except ImageRejected as exc:
        raise ProblemError(exc.status, exc.code, str(exc)) from exc
