"""How stable and how stylized a video is: the measures the benchmark reports.

`warping_error` is the temporal warping error of video style-transfer papers (Lai et al. 2018,
Chen et al. 2017): flow between consecutive *source* frames (Farneback here, a different method
from the stabilizer's DIS, so the stabilizer cannot simply fit the ruler), the previous *output*
frame warped along it, and the mean absolute difference to the current output over non-occluded
pixels, on a 0..1 scale. On the source frames themselves it gives the floor that flow and
interpolation error alone produce.

A blurred or frozen output would also be "stable", so `gram_distance` (style statistics) and
`sharpness` (high-frequency energy) go next to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from app.video.flow import FlowMethod, flows_both_ways, gray, warp


def warping_error(
    sources: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    method: FlowMethod = FlowMethod.farneback,
) -> float:
    """Mean over frame pairs of the masked mean |O_t - warp(O_t-1)|, pixels scaled to 0..1."""
    if len(sources) != len(outputs) or len(sources) < 2:
        raise ValueError("need the same number (two or more) of source and output frames")
    errors = []
    for t in range(1, len(sources)):
        backward, mask = flows_both_ways(gray(sources[t]), gray(sources[t - 1]), method)
        warped = warp(outputs[t - 1], backward).astype(np.float32)
        difference = np.abs(outputs[t].astype(np.float32) - warped).mean(axis=-1) / 255.0
        visible = mask.sum()
        if visible > 0:
            errors.append(float((difference * mask).sum() / visible))
    return float(np.mean(errors)) if errors else 0.0


def gram_matrix(pixels: np.ndarray) -> np.ndarray:
    """Gram matrix of simple texture features: colour plus oriented gradients at two scales.

    A network-free style statistic, cheap enough to run on every frame of a benchmark clip.
    """
    image = pixels.astype(np.float32) / 255.0
    features = [image[..., c] for c in range(3)]
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for level in (luma, cv2.pyrDown(luma)):
        dx = cv2.Sobel(level, cv2.CV_32F, 1, 0, ksize=3)
        dy = cv2.Sobel(level, cv2.CV_32F, 0, 1, ksize=3)
        if level.shape != luma.shape:
            dx = cv2.resize(dx, luma.shape[::-1])
            dy = cv2.resize(dy, luma.shape[::-1])
        features += [dx, dy, np.abs(dx) + np.abs(dy)]
    flat = np.stack([f.reshape(-1) for f in features])
    return flat @ flat.T / flat.shape[1]


def gram_distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean relative Frobenius distance between per-frame Gram matrices of two videos."""
    distances = []
    for x, y in zip(a, b, strict=True):
        gx, gy = gram_matrix(x), gram_matrix(y)
        distances.append(float(np.linalg.norm(gx - gy) / max(np.linalg.norm(gy), 1e-12)))
    return float(np.mean(distances))


def sharpness(frames: Sequence[np.ndarray]) -> float:
    """Mean variance of the Laplacian (0..255 luma): drops when an output is blurred."""
    return float(np.mean([cv2.Laplacian(gray(f), cv2.CV_64F).var() for f in frames]))
