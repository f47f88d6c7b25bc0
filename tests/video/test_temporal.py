"""The flow tools, the warping-error metric and the stabilizer, against known motion."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pattern

from app.video.flow import FlowMethod, flows_both_ways, gray, warp
from app.video.stabilize import Stabilizer
from app.video.temporal import gram_distance, sharpness, warping_error

SHIFT = 3  # px per frame, to the right


def shifted_clip(frames: int = 6) -> list[np.ndarray]:
    """A picture sliding right by SHIFT px a frame: flow is known exactly (np.roll reference)."""
    base = pattern(160, 96, seed=5)
    return [np.roll(base, SHIFT * t, axis=1) for t in range(frames)]


@pytest.mark.parametrize("method", list(FlowMethod))
def test_flow_finds_a_known_shift(method: FlowMethod) -> None:
    a, b = shifted_clip(2)
    backward, mask = flows_both_ways(gray(b), gray(a), method)
    interior = (slice(10, -10), slice(10, -10))
    assert np.median(backward[interior][..., 0]) == pytest.approx(-SHIFT, abs=0.3)
    assert np.median(np.abs(backward[interior][..., 1])) < 0.3
    assert mask[interior].mean() > 0.9
    warped = warp(a, backward)
    assert np.abs(warped[interior].astype(float) - b[interior]).mean() < 6


def test_warping_error_ranks_flicker() -> None:
    clip = shifted_clip()
    rng = np.random.default_rng(0)
    flicker = [np.clip(f + rng.normal(0, 25, f.shape), 0, 255).astype(np.uint8) for f in clip]
    follows_motion = warping_error(clip, clip)
    flickering = warping_error(clip, flicker)
    assert follows_motion < 0.03
    assert flickering > 3 * follows_motion


def test_warping_error_needs_matching_clips() -> None:
    with pytest.raises(ValueError):
        warping_error(shifted_clip(3), shifted_clip(2))


def test_stabilizer_cuts_flicker_and_keeps_detail() -> None:
    """Per-frame noise stands in for a network's flicker: the stabilized clip must be much
    steadier, yet keep the texture statistics and sharpness of the per-frame output."""
    clip = shifted_clip(8)
    rng = np.random.default_rng(1)
    stylized = [np.clip(f + rng.normal(0, 20, f.shape), 0, 255).astype(np.uint8) for f in clip]
    stabilizer = Stabilizer(0.7)
    outputs = [stabilizer(s, p) for s, p in zip(clip, stylized, strict=True)]
    plain_error = warping_error(clip, stylized)
    assert warping_error(clip, outputs) < 0.7 * plain_error
    assert gram_distance(outputs, stylized) < 0.1
    assert sharpness(outputs) > 0.6 * sharpness(stylized)


def test_stabilize_zero_is_per_frame() -> None:
    clip = shifted_clip(3)
    stabilizer = Stabilizer(0.0)
    for frame in clip:
        np.testing.assert_array_equal(stabilizer(frame, 255 - frame), 255 - frame)


def test_scene_cut_takes_the_fresh_frame() -> None:
    """No consistent flow between unrelated frames: the blend switches itself off."""
    first = pattern(128, 96, seed=1)
    cut = np.ascontiguousarray(pattern(128, 96, seed=2)[::-1, ::-1])
    stabilizer = Stabilizer(0.9)
    stabilizer(first, first)
    out = stabilizer(cut, cut)
    assert np.abs(out.astype(float) - cut).mean() < 0.25 * np.abs(first.astype(float) - cut).mean()


def test_out_of_range_weight_is_refused() -> None:
    with pytest.raises(ValueError):
        Stabilizer(1.0)
