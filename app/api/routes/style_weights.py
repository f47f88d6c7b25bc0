"""GET /model/styles/{name}/weights: a TransformerNet style's network, to run anywhere.

`pth` is an fp32 state dict in pytorch/examples' layout (its `TransformerNet` loads it with
`load_state_dict`), `onnx` the same network exported with dynamic height and width (input and
output RGB 0..255, NCHW), `safetensors` the fp16 weights Atelier itself stores. Trained user
styles are private to their key like every other use of them; in-box and official styles are
public.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import ServiceDep, StyleScopeDep, UserStylesDep
from app.api.problems import ProblemError, problem_responses
from app.api.uploads import find_style
from app.nets.transformer_net import TransformerNet
from app.styles.catalog import NetworkFamily, Style
from app.weights.checkpoints import (
    load_transformer_net,
    transformer_net_from_bytes,
    transformer_net_onnx,
    transformer_net_pth,
    transformer_net_safetensors,
)

router = APIRouter(tags=["styles"])


class WeightsFormat(StrEnum):
    pth = "pth"
    onnx = "onnx"
    safetensors = "safetensors"


MEDIA = {
    WeightsFormat.pth: "application/octet-stream",
    WeightsFormat.onnx: "application/onnx",
    WeightsFormat.safetensors: "application/octet-stream",
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/model/styles/{name}/weights",
    summary="Download a fast style network (pytorch/examples .pth, ONNX or safetensors)",
    response_class=Response,
    responses={
        200: {"content": {media: _BINARY for media in set(MEDIA.values())}},
        **problem_responses(401, 404, 409, 422, 429, 503),
    },
)
async def style_weights(
    service: ServiceDep,
    user_styles: UserStylesDep,
    scope: StyleScopeDep,
    name: Annotated[str, Path(max_length=100)],
    format: Annotated[WeightsFormat, Query(description="File format.")] = WeightsFormat.pth,
) -> Response:
    style = await find_style(service, user_styles, name, scope)
    if style.network is not NetworkFamily.transformer:
        raise ProblemError(
            409,
            "no_weights",
            f"style {style.name!r} is rendered by the {style.network.value} network, not a "
            "network of its own; only transformer-net styles have weights to download",
        )
    data = await run_in_threadpool(_serialise, style, format)
    return Response(
        data,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{style.name}.{format.value}"'},
    )


def _serialise(style: Style, format: WeightsFormat) -> bytes:
    net = _network(style)
    if format is WeightsFormat.pth:
        return transformer_net_pth(net)
    if format is WeightsFormat.safetensors:
        return transformer_net_safetensors(net)
    return transformer_net_onnx(net)


def _network(style: Style) -> TransformerNet:
    if style.weights is not None:
        return transformer_net_from_bytes(style.weights, f"style {style.name!r}")
    assert style.checkpoint is not None
    return load_transformer_net(style.checkpoint)
