"""Catalog endpoints: metadata, style list and thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app import __version__
from app.api.deps import get_runner, get_service
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import run_inference
from app.inference.runner import StyleRunner
from app.service import Service
from app.styles.catalog import SingleStyle, Style, UnknownStyle

router = APIRouter(tags=["model"])


class ModelMetadata(BaseModel):
    id: str
    name: str
    description: str
    type: str
    license: str
    source: str
    version: str
    default_style: str
    styles: int


class StyleInfo(BaseModel):
    name: str
    title: str
    description: str
    source: str
    license: str
    engine: str
    origin: str
    index: int | None
    default: bool
    thumbnail_url: str


class StyleList(BaseModel):
    default: str
    styles: list[StyleInfo]


@router.get("/model/metadata", response_model=ModelMetadata, summary="Model metadata (MAX)")
def metadata(service: Service = Depends(get_service)) -> ModelMetadata:
    return ModelMetadata(
        id="atelier-fast-neural-style-transfer",
        name="Atelier Fast Neural Style Transfer",
        description="Stylize photos with pretrained feed-forward networks (Johnson et al. 2016; "
        "Dumoulin et al. 2017) and run Gatys et al. optimisation jobs.",
        type="Image-to-Image Translation",
        license="Apache-2.0 (service); per-style licences in /model/styles",
        source="https://github.com/pytorch/examples/tree/main/fast_neural_style",
        version=__version__,
        default_style=service.default_style,
        styles=len(service.catalog),
    )


@router.get("/model/styles", response_model=StyleList, summary="List available styles")
def list_styles(request: Request, service: Service = Depends(get_service)) -> StyleList:
    default = service.default_style
    return StyleList(
        default=default,
        styles=[_info(request, style, style.name == default) for style in service.catalog.all()],
    )


@router.get(
    "/model/styles/{name}/thumbnail",
    summary="A style's thumbnail: its output on a reference photo",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(404, 422, 503),
    },
)
async def thumbnail(
    name: Annotated[str, Path(max_length=100)],
    service: Service = Depends(get_service),
    runner: StyleRunner = Depends(get_runner),
) -> Response:
    try:
        style = service.catalog.get(name)
    except UnknownStyle as exc:
        raise ProblemError(404, "unknown_style", f"no style named {name!r}") from exc
    data = await run_inference(
        service,
        service.thumbnails.get,
        style.name,
        lambda pixels: runner.render(pixels, SingleStyle(style)),
    )
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


def _info(request: Request, style: Style, default: bool) -> StyleInfo:
    return StyleInfo(
        name=style.name,
        title=style.title,
        description=style.description,
        source=style.source,
        license=style.license,
        engine=style.engine.value,
        origin=style.origin.value,
        index=style.index,
        default=default,
        thumbnail_url=str(request.url_for("thumbnail", name=style.name)),
    )
