"""Load TransformerNet checkpoints without ever unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from app.nets.transformer_net import TransformerNet, clean_state_dict


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
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name}: expected a state dict, found {type(state).__name__}")
    net = TransformerNet()
    try:
        net.load_state_dict(clean_state_dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise CheckpointError(
            f"{path.name}: not a TransformerNet checkpoint ({' '.join(first)})"
        ) from exc
    return net.eval().requires_grad_(False)
