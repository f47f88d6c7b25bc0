"""Catalog endpoints: metadata, style list and thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app import __version__
from app.api.access import may_access
from app.api.database import with_schema
from app.api.deps import ClientDep, RunnerDep, ServiceDep, StyleScopeDep, UserStylesDep
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import check_new_style_name, find_style, read_upload, run_inference
from app.imaging.decode_budget import reserve_decode
from app.perceptual.backbones import loss_networks
from app.serving.predict import STYLE_IMAGE_DECODE_SIZE
from app.serving.registration import RegisteredPainting, analyse_painting
from app.styles.catalog import (
    STYLE_NAME_MAX,
    SingleStyle,
    Style,
    StyleOrigin,
    normalise_name,
)
from app.styles.thumbnails import REFERENCE_CREDIT
from app.styles.user_styles import DuplicateStyle, NewUserStyle

router = APIRouter(tags=["model"])

# A private thumbnail must not be kept by shared caches, nor reused for another key.
PRIVATE = {"Cache-Control": "private, no-cache", "Vary": "X-API-Key, Authorization"}


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
    loss_networks: dict[str, str] = Field(
        description="What Gatys jobs and style training run on, and where the weights come from."
    )


class StyleInfo(BaseModel):
    name: str
    aliases: list[str] = Field(
        default_factory=list,
        description="Other names this style answers to (e.g. `mosaic` for Atelier's own mosaic "
        "while the official one is not installed); they are not listed separately.",
    )
    title: str
    description: str
    source: str
    license: str
    network: str = Field(
        description="The network that renders it: `multistyle26`, `transformer-net` or `arbitrary`."
    )
    origin: str
    index: int | None
    default: bool
    thumbnail_url: str


class StyleList(BaseModel):
    default: str
    thumbnail_photo: str = REFERENCE_CREDIT
    styles: list[StyleInfo]


@router.get("/model/metadata", response_model=ModelMetadata, summary="Model metadata (MAX)")
def metadata(service: ServiceDep) -> ModelMetadata:
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
        loss_networks=loss_networks(service.settings.gatys_backbone, service.settings.models_dir),
    )


@router.get(
    "/model/styles",
    response_model=StyleList,
    summary="List available styles",
    responses=problem_responses(401, 429),
)
async def list_styles(
    service: ServiceDep,
    user_styles: UserStylesDep,
    client: ClientDep,
    request: Request,
) -> StyleList:
    default = service.default_style
    styles = service.catalog.all() + await with_schema(
        user_styles, user_styles.visible_to, client.scope
    )
    return StyleList(
        default=default,
        styles=[_info(request, style, style.name == default) for style in styles],
    )


@router.post(
    "/model/styles",
    response_model=StyleInfo,
    status_code=201,
    summary="Register a painting as a named style",
    responses=problem_responses(400, 401, 409, 413, 422, 429, 503),
)
async def register_style(
    service: ServiceDep,
    runner: RunnerDep,
    user_styles: UserStylesDep,
    client: ClientDep,
    request: Request,
    response: Response,
    image: Annotated[UploadFile, File(description="The painting whose style to save.")],
    name: Annotated[
        str,
        Form(
            max_length=STYLE_NAME_MAX,
            description="Lowercase words joined by hyphens, e.g. `my-starry-night`.",
        ),
    ],
    title: Annotated[str | None, Form(max_length=200)] = None,
    description: Annotated[str, Form(max_length=2000)] = "",
) -> StyleInfo:
    check_new_style_name(service.catalog, name)
    data = await read_upload(image, service.settings.max_upload_bytes)

    def analyse_within_budget() -> RegisteredPainting:
        with reserve_decode(service.decode_budget, [(data, STYLE_IMAGE_DECODE_SIZE)]):
            return analyse_painting(runner, data, max_pixels=service.settings.max_pixels)

    painting = await run_inference(service, analyse_within_budget)
    new = NewUserStyle(
        name=name,
        title=title or name.replace("-", " ").title(),
        description=description,
        owner=client.id,
        vector=painting.vector,
        thumbnail=painting.thumbnail,
    )
    try:
        style = await with_schema(user_styles, user_styles.add, new)
    except DuplicateStyle as exc:
        # Names are per key (app.styles.user_styles): this says nothing about other keys' styles.
        raise ProblemError(409, "style_exists", f"you already have a style named {name!r}") from exc
    response.headers["Location"] = str(request.url_for("thumbnail", name=name))
    return _info(request, style, False)


@router.delete(
    "/model/styles/{name}",
    status_code=204,
    summary="Delete a user-registered style",
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def delete_style(
    service: ServiceDep,
    user_styles: UserStylesDep,
    client: ClientDep,
    name: Annotated[str, Path(max_length=100)],
) -> Response:
    key = normalise_name(name)
    if key in service.catalog:
        raise ProblemError(
            403,
            "style_protected",
            f"{key!r} is a built-in or installed style; it cannot be deleted",
        )
    style = await with_schema(user_styles, user_styles.get, key, client.scope)
    if style is None or not may_access(client.scope, style.owner):
        raise ProblemError(404, "unknown_style", f"no user style named {name!r}")
    await run_in_threadpool(user_styles.remove, style)
    service.thumbnails.invalidate(key)
    return Response(status_code=204)


@router.get(
    "/model/styles/{name}/thumbnail",
    summary="A style's thumbnail: its output on a reference photo",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        **problem_responses(401, 404, 422, 429, 503),
    },
)
async def thumbnail(
    service: ServiceDep,
    runner: RunnerDep,
    user_styles: UserStylesDep,
    scope: StyleScopeDep,
    name: Annotated[str, Path(max_length=100)],
) -> Response:
    """Public for built-in and installed styles, private to its key for a user style (see
    `get_style_scope`)."""
    style = await find_style(service, user_styles, name, scope)
    private = style.origin is StyleOrigin.user
    headers = PRIVATE if private else {"Cache-Control": "max-age=3600"}
    if private:
        # Never the shared thumbnail cache: it is keyed by name, and names are per key.
        stored = await run_in_threadpool(user_styles.thumbnail, style)
        if stored is None:  # deleted meanwhile
            raise ProblemError(404, "unknown_style", f"no style named {name!r}")
        return Response(stored, media_type="image/jpeg", headers=headers)
    data = await run_inference(
        service,
        service.thumbnails.get,
        style.name,
        lambda pixels: runner.render(pixels, SingleStyle(style)),
    )
    return Response(data, media_type="image/jpeg", headers=headers)


def _info(request: Request, style: Style, default: bool) -> StyleInfo:
    return StyleInfo(
        name=style.name,
        aliases=list(style.aliases),
        title=style.title,
        description=style.description,
        source=style.source,
        license=style.license,
        network=style.network.value,
        origin=style.origin.value,
        index=style.index,
        default=default,
        thumbnail_url=str(request.url_for("thumbnail", name=style.name)),
    )
