"""Interactive API docs that work offline: Swagger UI at /docs.

Its script, stylesheet and favicon come from the pinned `fastapi-offline` wheel and are served
by the service itself (FastAPI's defaults load them from a public CDN, which leaves a blank page
without internet). The online spec validator is off for the same reason, and ReDoc is not
offered: its page always loads a logo from the vendor's CDN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

DOCS_ASSETS_URL = "/docs-assets"
_OCTET_STREAM = "application/octet-stream"


def documented_app(**fastapi_options: Any) -> FastAPI:
    """A FastAPI app whose docs page uses local assets only."""
    app = FastAPIOffline(
        redoc_url=None,
        static_url=DOCS_ASSETS_URL,
        swagger_ui_parameters={"validatorUrl": None},
        **fastapi_options,
    )
    app.openapi = _with_file_pickers(app.openapi)  # type: ignore[method-assign]
    return app


def _with_file_pickers(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Describe lists of files the way Swagger UI renders file pickers for.

    FastAPI writes each file of a list as OpenAPI 3.1 `contentMediaType`, which Swagger UI shows
    as a text box pre-filled with random characters, so "Try it out" sends text instead of a
    file. `format: binary` items get a file picker per item, and an empty default list starts
    with none.
    """

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI caches it; patching again changes nothing
        for body in schema.get("components", {}).get("schemas", {}).values():
            _file_lists_as_pickers(body)
        return schema

    return openapi


def _file_lists_as_pickers(body: dict[str, Any]) -> None:
    required = set(body.get("required", ()))
    for name, prop in body.get("properties", {}).items():
        for option in [prop, *prop.get("anyOf", ())]:
            items = option.get("items", {})
            if option.get("type") == "array" and items.get("contentMediaType") == _OCTET_STREAM:
                option["items"] = {"type": "string", "format": "binary"}
                if name not in required:
                    prop.setdefault("default", [])
