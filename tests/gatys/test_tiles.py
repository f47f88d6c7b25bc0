"""Tiled Gatys evaluation against plain autograd on the whole image (the reference)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from app.gatys.tiles import (
    Reach,
    TilePlan,
    measure_reach,
    tile_features,
    tiled_grams,
    tiled_objective,
    tiled_targets,
)
from app.perceptual.backbones import Backbone, LossWeights, VGG16Backbone
from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss

WEIGHTS = LossWeights(content=1.0, style=10.0, tv=10.0)


@pytest.fixture(scope="module")
def vgg() -> Backbone:
    """VGG-16's layout with random weights: the arithmetic of bands, not ImageNet, is tested."""
    torch.manual_seed(0)
    return VGG16Backbone().freeze()


class _Blur(Backbone):
    """One 5x5 convolution, then a 2x2 pool: a reach that can be counted by hand."""

    name = "blur"
    content_layers = ("pool",)
    style_layers = ("conv", "pool")
    default_weights = WEIGHTS

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, padding=2)
        self.pool = nn.AvgPool2d(2)

    def layer_names(self) -> list[str]:
        return ["conv", "pool"]

    def tap(self, normalised: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        conv = self.conv(normalised)
        return {"conv": conv, "pool": self.pool(conv)}


class _Global(_Blur):
    """Every position sees the whole image's mean: nothing local to cut."""

    def tap(self, normalised: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        conv = self.conv(normalised)
        conv = conv + conv.mean(dim=(2, 3), keepdim=True)
        return {"conv": conv, "pool": self.pool(conv)}


def whole_objective(
    image: torch.Tensor, backbone: Backbone, content: dict, style: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective as optimize's untiled path writes it, and its autograd gradient."""
    image = image.detach().clone().requires_grad_(True)
    features = backbone(image, list(dict.fromkeys([*content, *style])))
    c = torch.stack([content_loss(features[n], t) for n, t in content.items()]).mean()
    s = torch.stack([style_loss(gram_matrix(features[n]), t) for n, t in style.items()]).mean()
    objective = WEIGHTS.content * c + WEIGHTS.style * s + WEIGHTS.tv * total_variation_loss(image)
    objective.backward()
    assert image.grad is not None
    return objective.detach(), image.grad


def test_reach_of_a_known_network() -> None:
    """A 5x5 convolution reaches 2 pixels each way; a pooled position covers its own 2, whose
    convolutions reach 2 beyond them: 2, already a whole stride."""
    reach = measure_reach(_Blur().freeze(), ["conv", "pool"])
    assert dict(reach.scales) == {"conv": 1, "pool": 2}
    assert reach.pixels == 2


def test_vgg16_reach_covers_its_receptive_field(vgg: Backbone) -> None:
    """relu5_1's receptive field is 132 pixels (1 + the kernel growth of 10 convolutions and
    4 pools), centred on its 16-pixel cell: 58 on each side, 64 in whole strides."""
    reach = measure_reach(vgg, ["relu4_2", "relu5_1"])
    assert reach.stride == 16
    assert reach.pixels == 64


def test_a_global_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="not local"):
        measure_reach(_Global().freeze(), ["conv", "pool"])


def test_plan_keeps_tiles_within_the_pixel_budget() -> None:
    plan = Reach({"a": 1, "b": 16}, 96).plan(tile_pixels=1_000_000)
    assert plan.side == 800  # 1000 pixels of input, less two margins, in whole strides
    rows = plan.tiles(1000, 1700)
    assert [(t.cols.start, t.cols.stop) for t in rows[0]] == [(0, 800), (800, 1600), (1600, 1700)]
    assert [(row[0].rows.start, row[0].rows.stop) for row in rows] == [(0, 800), (800, 1000)]
    tiles = [tile for row in rows for tile in row]
    assert all((t.rows.high - t.rows.low) * (t.cols.high - t.cols.low) <= 1_000_000 for t in tiles)
    assert all(t.rows.low % 16 == 0 and t.cols.low % 16 == 0 for t in tiles)
    assert rows[1][2].rows.low == 704 and rows[1][2].cols.high == 1700
    tiny = Reach({"a": 16}, 96).plan(tile_pixels=1000)
    assert tiny.side == 16  # always at least one stride of result


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the reference's largest value."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(("height", "width"), [(352, 272), (337, 290)])
def test_tiled_features_are_the_whole_image_features(
    vgg: Backbone, height: int, width: int
) -> None:
    """Equal to float rounding, odd sizes included; a margin one stride short is measurably
    off (so the comparison can tell a margin that is too small)."""
    layers = ["relu1_1", "relu3_1", "relu5_1"]
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    plan = measure_reach(vgg, layers).plan(tile_pixels=224 * 224)
    assert len(plan.tiles(height, width)) >= 3 and len(plan.tiles(height, width)[0]) >= 3
    whole = vgg(image, layers)
    pieces = tiled_targets(vgg, image, layers, plan)
    grams = tiled_grams(vgg, image, layers, plan)
    short = tiled_targets(vgg, image, layers, dataclasses.replace(plan, reach=plan.reach - 16))
    for name in layers:
        assert pieces[name].shape == whole[name].shape
        assert worst(pieces[name], whole[name]) < 5e-6
        assert worst(grams[name], gram_matrix(whole[name])) < 5e-6
    assert worst(short["relu5_1"], whole["relu5_1"]) > 3e-5


def test_objective_and_gradient_match_the_whole_image(vgg: Backbone) -> None:
    """The two-pass tiled gradient is the gradient of the whole image's objective; with a
    margin one stride short it is measurably off."""
    generator = torch.Generator().manual_seed(2)
    content_image = torch.rand(1, 3, 320, 200, generator=generator)
    style_image = torch.rand(1, 3, 96, 80, generator=generator)
    noise = 0.2 * torch.rand(1, 3, 320, 200, generator=generator)
    image = (content_image + noise).clamp(0, 1)
    content = {"relu4_2": vgg(content_image, ["relu4_2"])["relu4_2"]}
    style_layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    features = vgg(style_image, style_layers)
    style = {name: gram_matrix(features[name]) for name in style_layers}
    reference, reference_gradient = whole_objective(image, vgg, content, style)

    plan = measure_reach(vgg, ["relu4_2", *style_layers]).plan(tile_pixels=224 * 224)
    assert len(plan.tiles(320, 200)) >= 3
    gradients = []
    for margin in (plan.reach, plan.reach - 16):
        x = image.clone().requires_grad_(True)
        terms = tiled_objective(
            x, vgg, content, style, WEIGHTS, dataclasses.replace(plan, reach=margin)
        )
        assert x.grad is not None
        gradients.append(x.grad)
        if margin == plan.reach:
            assert abs(float(sum(terms)) - float(reference)) < 1e-5 * float(reference)
    assert worst(gradients[0], reference_gradient) < 2.5e-6
    assert worst(gradients[1], reference_gradient) > 4e-6


def test_a_tile_maps_to_the_matching_positions_of_each_tap(vgg: Backbone) -> None:
    image = torch.rand(1, 3, 256, 192, generator=torch.Generator().manual_seed(3))
    plan = TilePlan(stride=16, reach=64, side=64, scales={"relu1_1": 1, "relu4_2": 8})
    tile = plan.tiles(256, 192)[1][2]
    core = tile_features(vgg, image, tile, ["relu1_1", "relu4_2"], plan)
    whole = vgg(image, ["relu1_1", "relu4_2"])
    assert worst(core["relu1_1"], whole["relu1_1"][:, :, 64:128, 128:192]) < 5e-6
    assert worst(core["relu4_2"], whole["relu4_2"][:, :, 8:16, 16:24]) < 5e-6
