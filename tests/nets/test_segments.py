"""A network cut at its norms: the chain of segments against the network itself.

Each network runs whole as the reference. The chain runs with each norm's statistics computed
here, by hand, from the value the segment hands over (numpy, float64), so neither the chain's
own moments nor the tiling code is trusted to check it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import pattern

from app.nets.arbitrary import ArbitraryTransformer
from app.nets.multistyle import NUM_STYLES, MultiStyleNet
from app.nets.segments import (
    MEAN,
    ROWS,
    VAR,
    SegmentedNetwork,
    band_moments,
    deepest_run,
    merge,
    split_at_norms,
)
from app.serving.pixels import network_input
from app.serving.torch_backend import PixelScale
from app.weights.checkpoints import load_transformer_net
from tests.serving.test_tiling import MOSAIC


def _network(kind: str) -> tuple[PixelScale, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    if kind == "transformer":
        return PixelScale(load_transformer_net(MOSAIC).eval(), unit_range=False), ()
    if kind == "multistyle":
        net = MultiStyleNet().eval()
        for parameter in net.parameters():
            parameter.data.normal_(0.0, 0.1)
        for module in net.modules():
            if hasattr(module, "gamma"):
                module.gamma.data.fill_(1.0)  # type: ignore[union-attr]
        return PixelScale(net, unit_range=True), (torch.full((NUM_STYLES,), 1.0 / NUM_STYLES),)
    net = ArbitraryTransformer().eval()
    for parameter in net.parameters():
        parameter.data.normal_(0.0, 0.1)
    return PixelScale(net, unit_range=True), (torch.rand(1, 100),)


def _run_chain(
    network: SegmentedNetwork, image: torch.Tensor, condition: tuple[torch.Tensor, ...]
) -> dict[str, torch.Tensor]:
    """Every value the chain computes, by name."""
    values = {network.inputs[0].name: image}
    values.update((v.name, c) for v, c in zip(network.inputs[1:], condition, strict=True))
    source: dict[int, str] = {}
    with torch.no_grad():
        for segment in network.segments:
            feeds = []
            for name in segment.inputs:
                if name == ROWS:
                    feeds.append(torch.ones(image.shape[2] // segment.collect_scale))
                elif name in (MEAN, VAR):
                    x = values[source[segment.norm]].double().numpy()  # type: ignore[index]
                    moment = x.mean(axis=(0, 2, 3)) if name == MEAN else x.var(axis=(0, 2, 3))
                    feeds.append(torch.from_numpy(moment[None]).float())
                else:
                    feeds.append(values[name])
            results = list(segment.module(*feeds))
            if segment.collects is not None:
                results.pop()
                assert segment.collected is not None
                source[segment.collects] = segment.collected
            values.update((v.name, r) for v, r in zip(segment.outputs, results, strict=True))
    return values


@pytest.mark.parametrize("kind", ["transformer", "multistyle", "arbitrary"])
def test_chain_reproduces_the_network(kind: str) -> None:
    module, condition = _network(kind)
    sample = (torch.rand(1, 3, 128, 128) * 255.0, *condition)
    network = split_at_norms(module, sample)
    assert len(network.segments) == len(network.channels) + 1
    pixels = pattern(96, 72, seed=1)
    with torch.no_grad():
        reference = module(torch.from_numpy(network_input(pixels)), *condition)
    image = torch.from_numpy(network_input(pixels))
    values = _run_chain(network, image, condition)
    chained = values[network.segments[-1].outputs[-1].name].numpy().astype(np.int16)
    reference = reference.numpy().astype(np.int16)
    assert chained.shape == reference.shape == (1, 72, 96, 3)
    assert np.abs(chained - reference).max() <= 1
    assert reference.std() > 5  # a picture, not a constant


@pytest.mark.parametrize("kind", ["transformer", "multistyle", "arbitrary"])
def test_a_merged_run_reproduces_the_network(kind: str) -> None:
    """The coarsest run of segments merged into one, its inner norms' statistics taken inside
    it: with the whole image, the chain still computes the network."""
    module, condition = _network(kind)
    network = split_at_norms(module, (torch.rand(1, 3, 128, 128) * 255.0, *condition))
    run = deepest_run(network)
    assert run is not None and run[1] - run[0] >= 4  # a residual stack, not a pair
    merged = merge(network, *run)
    assert merged.whole and merged.norm == network.segments[run[0]].norm
    assert merged.collects == network.segments[run[1]].collects
    segments = (*network.segments[: run[0]], merged, *network.segments[run[1] + 1 :])
    pixels = pattern(96, 72, seed=1)
    with torch.no_grad():
        reference = module(torch.from_numpy(network_input(pixels)), *condition).numpy()
    image = torch.from_numpy(network_input(pixels))
    values = _run_chain(dataclasses.replace(network, segments=segments), image, condition)
    chained = values[network.segments[-1].outputs[-1].name].numpy()
    assert np.abs(chained.astype(np.int16) - reference.astype(np.int16)).max() <= 1


def test_the_deepest_run_is_transformer_nets_residual_stack() -> None:
    """Segments 3-12 read and write only maps at a quarter of the side (five blocks of two
    norms); the merged run reads the stack's input and hands on the last block's two maps."""
    module, _ = _network("transformer")
    network = split_at_norms(module, (torch.rand(1, 3, 128, 128) * 255.0,))
    assert deepest_run(network) == (3, 12)
    merged = merge(network, 3, 12)
    assert merged.inputs == (MEAN, VAR, network.segments[2].outputs[0].name, ROWS)
    assert {v.name for v in merged.outputs} == set(network.segments[13].maps_in)
    assert all(v.scale == 4 for v in merged.outputs)


def test_segments_say_what_they_read_and_how_far() -> None:
    """TransformerNet: 15 norms; a residual block's input is handed past the norm between its
    convolutions; the 9x9 convolutions reach 4 rows, the 3x3 ones fewer."""
    module, _ = _network("transformer")
    network = split_at_norms(module, (torch.rand(1, 3, 128, 128) * 255.0,))
    assert network.channels == (32, 64, 128, *([128] * 10), 64, 32)
    segments = network.segments
    assert segments[0].inputs == ("image", ROWS) and segments[0].outputs[0].scale == 1
    assert [v.scale for v in segments[3].outputs] == [4, 4]  # block input and conv1's output
    assert segments[-1].outputs[-1].layout == "nhwc" and segments[-1].collects is None
    assert 4 <= segments[0].reach <= 6 and 4 <= segments[-1].reach <= 6
    assert all(0 < s.reach <= 8 for s in segments)


def test_band_moments_against_numpy() -> None:
    x = torch.randn(1, 5, 12, 9, dtype=torch.float32) * 3.0 + 100.0
    rows = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.float32)
    shift, s1, s2 = band_moments(x, rows).double().numpy()
    own = x[0, :, 2:9].double().numpy().reshape(5, -1)
    count = own.shape[1]
    np.testing.assert_allclose(shift + s1 / count, own.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(s2 / count - (s1 / count) ** 2, own.var(axis=1), rtol=1e-3)


def test_segments_say_which_maps_are_handed_on() -> None:
    """What a backend may carry in 16 bits: the maps one segment hands the next, not the
    image, the statistics, the rows or the pixels. The graphs themselves are float32."""
    module, _ = _network("transformer")
    network = split_at_norms(module, (torch.rand(1, 3, 128, 128) * 255.0,))
    first, second, last = network.segments[0], network.segments[1], network.segments[-1]
    assert first.handed_on == (False, False) and first.maps_out == (first.outputs[0].name,)
    assert second.inputs[:3] == (MEAN, VAR, first.outputs[0].name) and second.inputs[3] == ROWS
    assert second.handed_on == (False, False, True, False)
    assert last.maps_out == () and last.outputs[-1].layout == "nhwc"
    assert all(x.dtype == torch.float32 for s in network.segments for x in s.example())
    with torch.no_grad():
        image = torch.from_numpy(network_input(pattern(64, 64, seed=2)))
        handed, moments = first.module(image, torch.ones(64))
    assert handed.dtype == moments.dtype == torch.float32
