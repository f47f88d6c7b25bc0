"""Flow-guided temporal stabilization of per-frame stylized video.

Per-frame stylization flickers because the network answers each frame afresh. Where the source
moved consistently (forward-backward flow check), the output is blended with the previous
*output* warped along the flow: `out = (1 - w m) stylized + w m warp(previous_out)`, with `w` the
`stabilize` weight and `m` the soft visibility mask. Occluded and newly revealed pixels (m = 0)
take the fresh stylization, so nothing smears across object boundaries, and a scene cut (no
consistent flow anywhere) resets the blend by itself. Because the recursion runs on outputs,
texture is carried along motion trajectories instead of being re-drawn every frame.

Averaging two textures that do not line up lowers their contrast, and a plain blend looks
blurred (a third of the per-frame sharpness at weight 0.7 in bench/video.py). So the blend is
split into two detail bands and a base (Laplacian-pyramid style) and each band's energy is
brought back to that of the fresh stylization; warping is bicubic so repeated warps do not
soften the carried texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.video.flow import FlowMethod, flows_both_ways, gray, warp

MAX_STABILIZE = 0.95
# The flow (and the visibility mask) is computed at this long side at most: coarse motion is
# plenty for the blend, and the cost grows with pixels.
FLOW_MAX_SIDE = 320
MASK_BLUR = 5  # px: soft mask edges avoid visible seams where occlusions start
DETAIL_SIGMAS = (1.0, 3.0)  # Gaussian sigmas (px) splitting fine and medium detail bands
MAX_DETAIL_GAIN = 3.0


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
        warped = warp(state.previous_output, backward, cv2.INTER_CUBIC).astype(np.float32)
        fresh = stylized.astype(np.float32)
        alpha = (self.weight * mask)[..., None]
        blended = (1.0 - alpha) * fresh + alpha * warped
        return np.clip(restore_detail(blended, fresh) + 0.5, 0, 255).astype(np.uint8)


def _detail_bands(image: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    bands = []
    base = image
    for sigma in DETAIL_SIGMAS:
        low = cv2.GaussianBlur(base, (0, 0), sigma)
        bands.append(base - low)
        base = low
    return bands, base


def _band_energies(image: np.ndarray) -> list[float]:
    """Mean squared detail per band, on luma (the gains apply to all channels alike)."""
    bands, _ = _detail_bands(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    return [float(np.mean(band**2)) for band in bands]


def restore_detail(blended: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`blended` with each detail band scaled to the energy of the same band in `reference`."""
    bands, base = _detail_bands(blended)
    out = base
    energies = zip(_band_energies(blended), _band_energies(reference), strict=True)
    for band, (energy, target) in zip(bands, energies, strict=True):
        gain = np.sqrt(target / energy) if energy > 1e-6 else 1.0
        out = out + min(MAX_DETAIL_GAIN, max(1.0, gain)) * band
    return out
