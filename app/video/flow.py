"""Optical flow between frames, warping along it, and where it can be trusted (OpenCV).

Flows here are *backward*: `flow[y, x]` says where pixel (x, y) of the current frame was in the
previous one, so `warp(previous, flow)` brings the previous frame into the current frame's place.
The forward-backward check (Sundaram et al. 2010, as used by Ruder et al. for video style
transfer) marks pixels whose flow does not round-trip as occluded.
"""

from __future__ import annotations

import functools
from enum import StrEnum

import cv2
import numpy as np


class FlowMethod(StrEnum):
    dis = "dis"
    farneback = "farneback"


def gray(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)


def optical_flow(current: np.ndarray, previous: np.ndarray, method: FlowMethod) -> np.ndarray:
    """HxWx2 float32 flow from `current` to `previous` (both HxW uint8 grayscale)."""
    if method is FlowMethod.dis:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return dis.calc(current, previous, None)
    return cv2.calcOpticalFlowFarneback(
        current, previous, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
        poly_n=5, poly_sigma=1.2, flags=0,
    )  # fmt: skip


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of a frame size, made once per size (read-only)."""
    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    grid_x.flags.writeable = False
    grid_y.flags.writeable = False
    return grid_x, grid_y


def warp(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Sample `image` at (x, y) + flow(x, y) (bilinear unless told), replicating borders."""
    grid_x, grid_y = _grid(*flow.shape[:2])
    return cv2.remap(
        image,
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        interpolation=interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """HxW float32, 1 where the flow round-trips (visible in both frames), 0 where occluded.

    `backward` maps current -> previous, `forward` previous -> current; a pixel is consistent
    when |b + f(x + b)|^2 < 0.01 (|b|^2 + |f(x + b)|^2) + 0.5, and it stays inside the frame.
    """
    forward_at = warp(forward, backward)
    round_trip = cv2.magnitude(*cv2.split(backward + forward_at)) ** 2
    magnitude = (
        cv2.magnitude(*cv2.split(backward)) ** 2 + cv2.magnitude(*cv2.split(forward_at)) ** 2
    )
    consistent = round_trip < 0.01 * magnitude + 0.5
    height, width = backward.shape[:2]
    grid_x, grid_y = _grid(height, width)
    source_x = grid_x + backward[..., 0]
    source_y = grid_y + backward[..., 1]
    inside = (source_x >= 0) & (source_x <= width - 1) & (source_y >= 0) & (source_y <= height - 1)
    return (consistent & inside).astype(np.float32)


def flows_both_ways(
    current: np.ndarray, previous: np.ndarray, method: FlowMethod
) -> tuple[np.ndarray, np.ndarray]:
    """(backward flow, visibility mask) between two grayscale frames."""
    backward = optical_flow(current, previous, method)
    forward = optical_flow(previous, current, method)
    return backward, consistency_mask(backward, forward)
