"""TransformerNet: official layer names, legacy checkpoints, safe loading, and running it.

The reference forward pass below is written from the published architecture (Johnson et al.;
pytorch/examples `fast_neural_style`) with plain torch functions on the state dict, so a
loaded checkpoint is checked against the weights themselves, not against our module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from app.nets.transformer_net import TransformerNet, clean_state_dict
from app.serving.runner import StyleRunner
from app.styles.catalog import NetworkFamily, SingleStyle, Style, StyleOrigin
from app.weights.checkpoints import CheckpointError, load_transformer_net

_RES_LAYERS = [
    "conv1.conv2d.weight",
    "conv1.conv2d.bias",
    "in1.weight",
    "in1.bias",
    "conv2.conv2d.weight",
    "conv2.conv2d.bias",
    "in2.weight",
    "in2.bias",
]
# The key list of the official pytorch/examples checkpoints (mosaic.pth, candy.pth, ...).
OFFICIAL_KEYS = [
    "conv1.conv2d.weight",
    "conv1.conv2d.bias",
    "in1.weight",
    "in1.bias",
    "conv2.conv2d.weight",
    "conv2.conv2d.bias",
    "in2.weight",
    "in2.bias",
    "conv3.conv2d.weight",
    "conv3.conv2d.bias",
    "in3.weight",
    "in3.bias",
    *[f"res{i}.{layer}" for i in range(1, 6) for layer in _RES_LAYERS],
    "deconv1.conv2d.weight",
    "deconv1.conv2d.bias",
    "in4.weight",
    "in4.bias",
    "deconv2.conv2d.weight",
    "deconv2.conv2d.bias",
    "in5.weight",
    "in5.bias",
    "deconv3.conv2d.weight",
    "deconv3.conv2d.bias",
]
OFFICIAL_SHAPES = {
    "conv1.conv2d.weight": (32, 3, 9, 9),
    "conv2.conv2d.weight": (64, 32, 3, 3),
    "conv3.conv2d.weight": (128, 64, 3, 3),
    "res3.conv2.conv2d.weight": (128, 128, 3, 3),
    "res5.in2.weight": (128,),
    "deconv1.conv2d.weight": (64, 128, 3, 3),
    "deconv2.conv2d.weight": (32, 64, 3, 3),
    "deconv3.conv2d.weight": (3, 32, 9, 9),
    "deconv3.conv2d.bias": (3,),
    "in4.weight": (64,),
}
NORM_LAYERS = [
    "in1",
    "in2",
    "in3",
    *[f"res{i}.in{j}" for i in range(1, 6) for j in (1, 2)],
    "in4",
    "in5",
]


# Unpickling this must never happen: weights_only loading refuses unknown globals.
UNPICKLED: list[str] = []


def _record(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    def __reduce__(self):
        return (_record, ("arbitrary code ran",))


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every official key, with the shapes TransformerNet declares."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in TransformerNet().state_dict().items():
        scale = 0.1 if name.endswith("conv2d.weight") else 0.5
        value = torch.randn(tensor.shape, generator=generator) * scale
        if name.split(".")[-2].startswith("in") and name.endswith("weight"):
            value = 1.0 + value  # norm scales near one, as in trained nets
        state[name] = value
    return state


def legacy_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the instance-norm running stats that PyTorch < 0.4 saved in the official files."""
    legacy = dict(state)
    for layer in NORM_LAYERS:
        channels = state[f"{layer}.weight"].shape[0]
        legacy[f"{layer}.running_mean"] = torch.zeros(channels)
        legacy[f"{layer}.running_var"] = torch.ones(channels)
    return legacy


def reference_forward(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The architecture written out by hand: reflect-pad convs, affine instance norm, ReLU."""

    def conv(name: str, y: torch.Tensor, stride: int = 1, upsample: bool = False) -> torch.Tensor:
        if upsample:
            y = F.interpolate(y, scale_factor=2, mode="nearest")
        weight = s[f"{name}.conv2d.weight"]
        pad = weight.shape[-1] // 2
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
        return F.conv2d(y, weight, s[f"{name}.conv2d.bias"], stride=stride)

    def norm(name: str, y: torch.Tensor) -> torch.Tensor:
        mean = y.mean(dim=(2, 3), keepdim=True)
        var = y.var(dim=(2, 3), keepdim=True, unbiased=False)
        y = (y - mean) / torch.sqrt(var + 1e-5)
        return y * s[f"{name}.weight"].view(1, -1, 1, 1) + s[f"{name}.bias"].view(1, -1, 1, 1)

    y = F.relu(norm("in1", conv("conv1", x)))
    y = F.relu(norm("in2", conv("conv2", y, stride=2)))
    y = F.relu(norm("in3", conv("conv3", y, stride=2)))
    for i in range(1, 6):
        r = F.relu(norm(f"res{i}.in1", conv(f"res{i}.conv1", y)))
        y = y + norm(f"res{i}.in2", conv(f"res{i}.conv2", r))
    y = F.relu(norm("in4", conv("deconv1", y, upsample=True)))
    y = F.relu(norm("in5", conv("deconv2", y, upsample=True)))
    return conv("deconv3", y)


def transformer_style(path: Path) -> Style:
    return Style(
        name="test-net",
        title="Test Net",
        description="",
        source="test",
        license="MIT",
        network=NetworkFamily.transformer,
        origin=StyleOrigin.local,
        checkpoint=path,
    )


# --------------------------------------------------------------------------------------------


def test_layer_names_match_official_checkpoints() -> None:
    state = TransformerNet().state_dict()
    assert len(OFFICIAL_KEYS) == 62  # 12 head + 5 x 8 residual + 10 tail
    assert set(state) == set(OFFICIAL_KEYS)
    for name, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[name].shape) == shape, name


def test_clean_state_dict_drops_only_legacy_running_stats() -> None:
    state = random_state()
    cleaned = clean_state_dict(legacy_checkpoint(state))
    assert set(cleaned) == set(OFFICIAL_KEYS)
    assert len(legacy_checkpoint(state)) == 62 + 2 * len(NORM_LAYERS)


def test_legacy_checkpoint_loads_and_matches_the_reference(tmp_path: Path) -> None:
    state = random_state(seed=1)
    path = tmp_path / "legacy.pth"
    torch.save(legacy_checkpoint(state), path)
    net = load_transformer_net(path)
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(2)) * 255.0
    with torch.inference_mode():
        got = net(x)
    expected = reference_forward(state, x)
    assert got.shape == (1, 3, 24, 20)
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-4 * max(scale, 1.0)


def test_safetensors_checkpoint_loads(tmp_path: Path) -> None:
    state = random_state(seed=3)
    path = tmp_path / "net.safetensors"
    save_file(state, str(path))
    net = load_transformer_net(path)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 255.0
    with torch.inference_mode():
        assert torch.allclose(net(x), reference_forward(state, x), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_checkpoint_runs_on_odd_sizes_through_the_runner(
    tmp_path: Path, cache_dir: Path, backend: str
) -> None:
    state = random_state(seed=5)
    path = tmp_path / "legacy.pth"
    torch.save(legacy_checkpoint(state), path)
    runner = StyleRunner(torch.device("cpu"), cache_dir, cpu_backend=backend)
    style = transformer_style(path)
    runner.load_transformer(style)
    rng = np.random.default_rng(6)
    for height, width in [(23, 37), (5, 3), (17, 16)]:
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        out = runner.stylize(pixels, SingleStyle(style))
        assert out.shape == (height, width, 3) and out.dtype == np.uint8

    # 23x37 is padded to 24x40 by reflecting the last rows/columns; check the crop against
    # the hand-written network on the same reflect-padded input.
    pixels = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    padded = np.pad(pixels, ((0, 1), (0, 3), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float()
    expected = reference_forward(state, x)[0, :, :23, :37].permute(1, 2, 0).numpy()
    expected = np.clip(expected, 0, 255)
    got = runner.stylize(pixels, SingleStyle(style)).astype(np.float64)
    assert np.abs(got - expected).max() <= 0.5 + 0.05


def test_wrong_shapes_name_the_file(tmp_path: Path) -> None:
    state = random_state()
    state["conv1.conv2d.weight"] = torch.zeros(16, 3, 9, 9)
    path = tmp_path / "wrong-shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong-shape\.pth.*not a TransformerNet"):
        load_transformer_net(path)


def test_missing_and_unexpected_keys_name_the_file(tmp_path: Path) -> None:
    state = random_state()
    del state["res3.in1.bias"]
    path = tmp_path / "missing-key.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing-key\.pth"):
        load_transformer_net(path)
    state = random_state()
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra-key.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"extra-key\.pth"):
        load_transformer_net(path)


def test_non_dict_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a-list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match=r"a-list\.pth.*state dict.*list"):
        load_transformer_net(path)


def test_arbitrary_objects_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    state = random_state()
    state["payload"] = Payload()  # type: ignore[assignment]
    torch.save(state, path)
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        load_transformer_net(path)
    assert UNPICKLED == []
    # Sanity: a plain unpickle of the same file would have run it.
    torch.load(path, weights_only=False)
    assert UNPICKLED == ["arbitrary code ran"]


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("garbage.pth", b"definitely not a checkpoint" * 10),
        ("empty.pth", b""),
        ("zip.pth", b"PK\x03\x04 not really a zip"),
        ("text.pth", b"this is not a checkpoint"),
        ("image.pth", b"GIF89a"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=filename.replace(".", r"\.")):
        load_transformer_net(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere\.pth.*not found"):
        load_transformer_net(tmp_path / "nowhere.pth")


def test_bad_safetensors_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        load_transformer_net(path)
