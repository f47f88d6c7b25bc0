"""Shared request steps: read an upload within its limit, resolve a style, check a new style's
name, run inference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import UploadFile
from pydantic import BeforeValidator

from app.api.access import may_access
from app.api.database import DATABASE_OUTAGES, database_unavailable, with_schema
from app.api.problems import ProblemError
from app.core.config import Settings
from app.core.number_lists import blend_weights
from app.imaging.decode import ImageRejected
from app.serving.executor import ExecutorBusy
from app.serving.service import Service
from app.styles.catalog import (
    InvalidBlend,
    SingleStyle,
    Style,
    StyleCatalog,
    StyleChoice,
    UnknownStyle,
    normalise_name,
)
from app.styles.user_styles import UserStyleStore
from app.weights.manifest import STYLE_NAME

T = TypeVar("T")


def _without_empty_fields(value: Any) -> Any:
    """Swagger UI's "Try it out" (and some form libraries) send an empty text field for a file
    list nobody picked files for; that means "no files", not a malformed upload."""
    if isinstance(value, list):
        return [item for item in value if not (isinstance(item, str) and item == "")]
    return value


# An optional repeated file field (`style_image`, `style`), e.g. `Annotated[FileList, File()]`.
FileList = Annotated[list[UploadFile] | None, BeforeValidator(_without_empty_fields)]


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


async def read_style_images(uploads: list[UploadFile], settings: Settings) -> tuple[bytes, ...]:
    """Painting uploads for arbitrary style, at most `max_style_images` of them."""
    if len(uploads) > settings.max_style_images:
        raise ProblemError(
            422,
            "invalid_parameter",
            f"at most {settings.max_style_images} style images per request "
            "(ATELIER_MAX_STYLE_IMAGES)",
        )
    return tuple([await read_upload(upload, settings.max_upload_bytes) for upload in uploads])


def checked_max_size(size: int, settings: Settings) -> int:
    """`size` (an output long side), or 422 naming ATELIER_MAX_SIZE_LIMIT when over it."""
    if size > settings.max_size_limit:
        raise ProblemError(
            422,
            "invalid_parameter",
            f"max_size {size} exceeds the limit {settings.max_size_limit} (ATELIER_MAX_SIZE_LIMIT)",
        )
    return size


def parse_style_weights(text: str | None, count: int) -> tuple[float, ...] | None:
    """`0.7,0.3` -> (0.7, 0.3): one weight per style image (`blend_weights`), else 422."""
    try:
        return blend_weights(text, count)
    except ValueError as exc:
        raise ProblemError(422, "invalid_parameter", f"style_weights: {exc}") from exc


async def resolve_style(
    service: Service, user_styles: UserStyleStore, spec: str, owner: str | None
) -> StyleChoice:
    """A catalog style or blend, else a user-registered style visible to `owner`."""
    try:
        return service.catalog.resolve(spec)
    except InvalidBlend as exc:
        raise ProblemError(422, "invalid_style", str(exc)) from exc
    except UnknownStyle as exc:
        if "," in spec or ":" in spec:
            # The caller's own style may be named: say why it cannot blend. Anyone else's
            # stays unknown, as everywhere.
            if await _user_style(user_styles, exc.name, owner) is not None:
                raise ProblemError(
                    422,
                    "invalid_style",
                    f"only built-in styles can be blended; {exc.name!r} is your own style "
                    "(use it alone)",
                ) from exc
            raise unknown_style(exc.name, exc.available) from exc
    return SingleStyle(await find_style(service, user_styles, spec, owner))


async def find_style(
    service: Service, user_styles: UserStyleStore, name: str, owner: str | None
) -> Style:
    """Look `name` up in the catalog, then among the user styles `owner` (a `Client.scope`) may
    use, read from the shared database."""
    if name in service.catalog:
        return service.catalog.get(name)
    style = await _user_style(user_styles, name, owner)
    if style is None:
        raise unknown_style(name, service.catalog.names())
    return style


async def _user_style(user_styles: UserStyleStore, name: str, owner: str | None) -> Style | None:
    """The user style `name` that `owner` (a `Client.scope`) may use, or None."""
    try:
        style = await with_schema(user_styles, user_styles.get, normalise_name(name), owner)
    except DATABASE_OUTAGES as exc:
        # The same answer as every HTTP route's; also here for the /live WebSocket, where
        # HTTP exception handlers do not apply.
        raise database_unavailable() from exc
    return style if style is not None and may_access(owner, style.owner) else None


def unknown_style(name: str, available: list[str]) -> ProblemError:
    """404 for a style name nobody may use here, listing the catalog's names."""
    return ProblemError(
        404,
        "unknown_style",
        f"no style named {name!r}; available: {', '.join(available)}",
        extra={"available": available},
    )


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


def check_new_style_name(catalog: StyleCatalog, name: str) -> None:
    """422 for a malformed name of a style about to be created (registered or trained), 409
    for one a catalog style already has (those are public); the caller's own user styles are
    checked when the row is written."""
    if not STYLE_NAME.match(name):
        raise ProblemError(
            422,
            "invalid_parameter",
            f"name {name!r} must be lowercase letters and digits joined by single hyphens",
        )
    if name in catalog:
        raise ProblemError(409, "style_exists", f"a built-in style is already named {name!r}")
