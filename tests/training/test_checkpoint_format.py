"""Training checkpoints name no module of ours, so moving packages never breaks a running
training's `.ckpt` files: a payload built by hand, as `atelier train` writes it, still loads."""

from __future__ import annotations

import io
import pickletools
import zipfile

import torch

from app.nets.transformer_net import TransformerNet
from app.training.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes


def hand_written_checkpoint() -> bytes:
    """The on-disk layout, spelled out without any of our classes."""
    net = TransformerNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    payload = {
        "iteration": 7,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": {"generator": torch.Generator().get_state(), "order": [2, 0, 1], "cursor": 1},
        "options": {"style_weight": 5.0, "batch_size": 2},
        "backbone": "vgg16",
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def pickled_modules(data: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (pickle_name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        pickle = archive.read(pickle_name)
    modules: set[str] = set()
    strings: list[str] = []
    for opcode, argument, _ in pickletools.genops(pickle):
        if opcode.name == "GLOBAL":
            modules.add(str(argument).split(" ")[0])
        elif isinstance(argument, str):
            strings.append(argument)
        if opcode.name == "STACK_GLOBAL":
            modules.add(strings[-2])
    return modules


def test_a_checkpoint_in_the_written_layout_loads() -> None:
    checkpoint = checkpoint_from_bytes(hand_written_checkpoint())
    assert (checkpoint.iteration, checkpoint.backbone) == (7, "vgg16")
    assert checkpoint.sampler.order == [2, 0, 1] and checkpoint.sampler.cursor == 1
    TransformerNet().load_state_dict(checkpoint.model)


def test_what_the_trainer_writes_names_only_torch_and_python_modules() -> None:
    written = checkpoint_to_bytes(checkpoint_from_bytes(hand_written_checkpoint()))
    modules = pickled_modules(written)
    assert modules, "the scan found no globals at all: it is not reading the pickle"
    assert not {m for m in modules if m == "app" or m.startswith("app.")}
    assert all(m.split(".")[0] in {"torch", "collections", "builtins", "_codecs"} for m in modules)
