"""Render batches of video frames with one style, through the instant path's StyleRunner.

One style for the whole clip: for paintings at `strength` < 1, the photo's own style vector is
taken once from the first frame, not per frame, so the blend itself cannot flicker. On CUDA the
frames of a batch run as one network call; on CPU one frame at a time (ONNX Runtime already uses
every core for one frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.serving.runner import StyleRunner, finish
from app.styles.catalog import StyleChoice


class FrameStylizer:
    def __init__(
        self,
        runner: StyleRunner,
        choice: StyleChoice,
        *,
        strength: float = 1.0,
        keep_colors: bool = False,
    ) -> None:
        self.runner = runner
        self.choice = choice
        self.strength = strength
        self.keep_colors = keep_colors
        self._strength_applied = False

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not frames:
            return []
        if not self._strength_applied:
            self.choice, self.strength = self.runner.with_strength(
                self.choice, self.strength, frames[0]
            )
            self._strength_applied = True
        if self.runner.device.type == "cuda" and len(frames) > 1:
            stylized = list(self.runner.stylize_batch(np.stack(frames), self.choice))
        else:
            stylized = [self.runner.stylize(frame, self.choice) for frame in frames]
        return [
            finish(pixels, source, self.strength, self.keep_colors)
            for source, pixels in zip(frames, stylized, strict=True)
        ]
