"""POST /model/predict: the instant stylization endpoint (MAX-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response

from app.api.deps import ClientDep, MetricsDep, RunnerDep, ServiceDep, UserStylesDep
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import (
    FileList,
    checked_max_size,
    parse_style_weights,
    read_style_images,
    read_upload,
    resolve_style,
    run_inference,
)
from app.imaging.decode_budget import reserve_decode
from app.imaging.encode import MEDIA_TYPES, OutputFormat
from app.serving.predict import (
    STYLE_IMAGE_DECODE_SIZE,
    PredictOptions,
    PredictResult,
    predict_bytes,
)
from app.styles.catalog import NetworkFamily, SingleStyle, StyleOrigin

router = APIRouter(tags=["model"])

_IMAGE_RESPONSES = {
    200: {
        "description": "The stylized image, same aspect ratio as the upload.",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in MEDIA_TYPES.values()
        },
    }
}


@router.post(
    "/model/predict",
    summary="Stylize an image",
    response_class=Response,
    responses={**_IMAGE_RESPONSES, **problem_responses(400, 401, 404, 413, 422, 429, 503)},
)
async def predict(
    service: ServiceDep,
    runner: RunnerDep,
    user_styles: UserStylesDep,
    client: ClientDep,
    metrics: MetricsDep,
    image: Annotated[
        UploadFile, File(description="Photo to stylize (JPEG, PNG, WebP, GIF, TIFF, BMP).")
    ],
    style: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Style name from /model/styles, or a blend of built-in styles such as "
            "`starry-swirls:0.7,golden-haze:0.3`. Defaults to mosaic when installed.",
        ),
    ] = None,
    model: Annotated[
        str | None, Query(max_length=200, description="Alias of `style` for MAX clients.")
    ] = None,
    max_size: Annotated[
        int | None,
        Query(ge=1, description="Longest side of the output in pixels (default 1024)."),
    ] = None,
    strength: Annotated[
        float, Query(ge=0.0, le=1.0, description="1 = full style, 0 = the original photo.")
    ] = 1.0,
    preserve_color: Annotated[
        bool, Query(description="Keep the photo's colours; transfer only luminance.")
    ] = False,
    format: Annotated[OutputFormat, Query(description="Output image format.")] = OutputFormat.jpeg,
    style_image: Annotated[
        FileList,
        File(
            description="Painting(s) to use as the style in one pass (arbitrary style); "
            "overrides `style`. Repeat the field to blend several."
        ),
    ] = None,
    style_weights: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Blend weights for several `style_image`s, e.g. `0.7,0.3`.",
        ),
    ] = None,
) -> Response:
    settings = service.settings
    if style is not None and model is not None and style != model:
        raise ProblemError(422, "invalid_parameter", "give either `style` or `model`, not both")
    size = checked_max_size(max_size or settings.default_max_size, settings)
    paintings = await read_style_images(style_image or [], settings)
    weights = parse_style_weights(style_weights, len(paintings))
    owner = client.id if client.authenticated else None
    choice = None
    if not paintings:
        spec = style or model or service.default_style
        choice = await resolve_style(service, user_styles, spec, owner)
    upload = await read_upload(image, settings.max_upload_bytes)
    options = PredictOptions(
        choice=choice,
        max_size=size,
        strength=strength,
        keep_colors=preserve_color,
        output=format,
        style_images=paintings,
        style_weights=weights,
    )
    decodes = [(upload, size), *((p, STYLE_IMAGE_DECODE_SIZE) for p in paintings)]

    def predict_within_budget() -> PredictResult:
        with reserve_decode(service.decode_budget, decodes):
            return predict_bytes(
                runner, upload, options, max_pixels=settings.max_pixels, min_side=settings.min_side
            )

    result = await run_inference(service, predict_within_budget)
    metrics.inference.labels(
        _style_label(options), _network_label(options), runner.backend_name
    ).observe(result.inference_ms / 1000.0)
    return Response(
        result.data,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'inline; filename="stylized.{format.value}"',
            "X-Image-Size": f"{result.width}x{result.height}",
            "X-Inference-Ms": f"{result.inference_ms:.1f}",
        },
    )


def _style_label(options: PredictOptions) -> str:
    """Metric label: the style's name; paintings, blends and user styles share one label each
    (/metrics is public, and a user style's name is private to its key)."""
    if options.style_images:
        return "style-image"
    if isinstance(options.choice, SingleStyle):
        style = options.choice.style
        return "user-style" if style.origin is StyleOrigin.user else style.name
    return "blend"


def _network_label(options: PredictOptions) -> str:
    if options.style_images:
        return NetworkFamily.arbitrary.value
    if isinstance(options.choice, SingleStyle):
        return options.choice.style.network.value
    return NetworkFamily.multistyle.value
