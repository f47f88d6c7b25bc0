"""Load and save TransformerNet weights without ever unpickling arbitrary objects."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

from app.nets.transformer_net import TransformerNet, clean_state_dict
from app.serving.onnx_backend import understood_export_warnings_silenced


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def load_transformer_net(path: Path) -> TransformerNet:
    """Read a `.pth` (weights_only) or `.safetensors` file into an eval-mode TransformerNet."""
    if not path.is_file():
        raise CheckpointError(f"{path.name}: file not found in {path.parent}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's weights-only unpickler and safetensors raise many types on garbage input
        # (UnpicklingError, IndexError, struct.error, SafetensorError...): all mean "unreadable".
        raise CheckpointError(f"{path.name}: not a readable weights file ({exc})") from exc
    return _to_net(state, path.name)


def transformer_net_from_bytes(data: bytes, label: str) -> TransformerNet:
    """A TransformerNet from safetensors or weights-only `.pth` bytes (e.g. a database blob)."""
    try:
        state = load(data)
    except (SafetensorError, ValueError, OSError):
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0]
            raise CheckpointError(f"{label}: not a readable weights file ({reason})") from exc
    return _to_net(state, label)


def transformer_net_safetensors(net: TransformerNet) -> bytes:
    """fp16 safetensors of `net`: half the size, and well under 1/255 of difference in output."""
    return save({k: v.detach().cpu().half().contiguous() for k, v in net.state_dict().items()})


def transformer_net_pth(net: TransformerNet) -> bytes:
    """An fp32 `.pth` state dict in pytorch/examples' layout, loadable by its TransformerNet."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().float() for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def transformer_net_onnx(net: TransformerNet) -> bytes:
    """`net` as ONNX for other runtimes: input and output (N,3,H,W) RGB 0..255, any H and W
    that are multiples of 4 (the output is not clamped, as in pytorch/examples)."""
    buffer = io.BytesIO()
    example = torch.rand(1, 3, 64, 64) * 255.0
    axes = {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}}
    with understood_export_warnings_silenced():
        torch.onnx.export(
            net.eval(), (example,), buffer, input_names=["input"], output_names=["output"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


def _to_net(state: object, label: str) -> TransformerNet:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{label}: expected a state dict, found {type(state).__name__}")
    net = TransformerNet()
    floats = {k: v.float() for k, v in clean_state_dict(state).items()}
    try:
        net.load_state_dict(floats, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise CheckpointError(
            f"{label}: not a TransformerNet checkpoint ({' '.join(first)})"
        ) from exc
    return net.eval().requires_grad_(False)
