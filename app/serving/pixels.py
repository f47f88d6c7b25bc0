"""The pixel layout every network call takes: padded sides, NCHW float32 in 0..255."""

from __future__ import annotations

import numpy as np

# The networks downsample twice by 2 and use 9x9 reflection padding at full resolution.
SIDE_MULTIPLE = 4
MIN_NETWORK_SIDE = 16


def pad_for_network(frames: np.ndarray, multiple: int = SIDE_MULTIPLE) -> np.ndarray:
    """Pad (N,H,W,3) frames to sides that are multiples of `multiple` (4, or a compile bucket)
    and at least 16.

    Reflection keeps borders natural; images too small to reflect are edge-replicated.
    """
    h, w = frames.shape[1:3]
    th = max(MIN_NETWORK_SIDE, -(-h // multiple) * multiple)
    tw = max(MIN_NETWORK_SIDE, -(-w // multiple) * multiple)
    if (th, tw) == (h, w):
        return frames
    mode = "reflect" if (tw - w) < w and (th - h) < h else "edge"
    return np.pad(frames, ((0, 0), (0, th - h), (0, tw - w), (0, 0)), mode=mode)


def network_input(frame: np.ndarray) -> np.ndarray:
    """(H,W,3) or (N,H,W,3) uint8 -> contiguous (N,3,H,W) float32 in 0..255, in one pass."""
    if frame.ndim == 3:
        frame = frame[None]
    return np.ascontiguousarray(frame.transpose(0, 3, 1, 2), dtype=np.float32)
