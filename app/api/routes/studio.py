"""The browser studio: `/` serves the single-page app from `app/web`, assets under `/static`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(str(resources.files("app") / "web"))

router = APIRouter()


@router.get("/", include_in_schema=False)
async def studio() -> Response:
    index = WEB_DIR / "index.html"
    if not index.exists():
        return RedirectResponse("/docs")
    return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})


def mount_studio(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")
