"""Flow-guided temporal stabilization of per-frame stylized video.

Per-frame stylization flickers because the network answers each frame afresh. Where the source
moved consistently (forward-backward flow check), the output is blended with the previous
*output* warped along the flow: `out = (1 - w m) stylized + w m warp(previous_out)`, with `w` the
`stabilize` weight and `m` the soft visibility mask. Occluded and newly revealed pixels (m = 0)
take the fresh stylization, so nothing smears across object boundaries, and a scene cut (no
consistent flow anywhere) resets the blend by itself. Because the recursion runs on outputs,
texture is carried along motion trajectories instead of being re-drawn every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.video.flow import FlowMethod, flows_both_ways, gray, warp

MAX_STABILIZE = 0.95
# The flow is computed at this long side at most: motion at a quarter of 1024 px is plenty for
# the blend, and flow cost grows with pixels.
FLOW_MAX_SIDE = 512
MASK_BLUR = 5  # px: soft mask edges avoid visible seams where occlusions start


@dataclass
class StabilizerState:
    """What the next frame needs: the previous source (gray) and output frames."""

    previous_gray: np.ndarray
    previous_output: np.ndarray


class Stabilizer:
    """Feed frames in display order; `weight` 0 returns the stylized frames untouched."""

    def __init__(self, weight: float, method: FlowMethod = FlowMethod.dis) -> None:
        if not 0.0 <= weight <= MAX_STABILIZE:
            raise ValueError(f"stabilize must be between 0 and {MAX_STABILIZE}")
        self.weight = weight
        self.method = method
        self.state: StabilizerState | None = None

    def __call__(self, source: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        if self.weight == 0.0:
            return stylized
        current_gray = gray(source)
        output = stylized
        if self.state is not None and self.state.previous_gray.shape == current_gray.shape:
            output = self._blend(current_gray, stylized, self.state)
        self.state = StabilizerState(current_gray, output)
        return output

    def _blend(
        self, current_gray: np.ndarray, stylized: np.ndarray, state: StabilizerState
    ) -> np.ndarray:
        height, width = current_gray.shape
        scale = min(1.0, FLOW_MAX_SIDE / max(height, width))
        small = (max(8, round(width * scale)), max(8, round(height * scale)))
        current_small = cv2.resize(current_gray, small, interpolation=cv2.INTER_AREA)
        previous_small = cv2.resize(state.previous_gray, small, interpolation=cv2.INTER_AREA)
        backward, mask = flows_both_ways(current_small, previous_small, self.method)
        if scale < 1.0:
            backward = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR)
            backward /= scale
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = cv2.blur(mask, (MASK_BLUR, MASK_BLUR))
        warped = warp(state.previous_output, backward).astype(np.float32)
        alpha = (self.weight * mask)[..., None]
        blended = (1.0 - alpha) * stylized.astype(np.float32) + alpha * warped
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
