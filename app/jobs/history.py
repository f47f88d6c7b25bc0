"""A job's loss curve: per-step losses, thinned so a long job stores a bounded number of points.

Engines report every step; keeping every one would write 20 000 rows for a long training run and
hand a polling browser megabytes. `HistorySampler` averages consecutive steps into buckets sized
from the job's total, so any job stores at most about `MAX_POINTS` points whatever its length,
and the curve keeps its shape (a mean, not a pick, so a noisy training loss is not aliased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_POINTS = 500


@dataclass(frozen=True)
class HistoryPoint:
    """Mean weighted losses over the steps up to and including `step`."""

    step: int
    content_loss: float
    style_loss: float
    tv_loss: float

    @property
    def total_loss(self) -> float:
        return self.content_loss + self.style_loss + self.tv_loss


def bucket_size(total: int, max_points: int = MAX_POINTS) -> int:
    """Steps averaged into one point so that `total` steps make at most `max_points` points."""
    return max(1, math.ceil(total / max_points))


class HistorySampler:
    """Collects reported steps and yields a point when a bucket closes (and at the last step)."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self._sums = [0.0, 0.0, 0.0]
        self._count = 0

    def add(
        self,
        step: int,
        total: int,
        losses: tuple[float | None, float | None, float | None],
    ) -> HistoryPoint | None:
        """Record one step; steps without losses (video) or with non-finite ones are skipped."""
        if any(value is None or not math.isfinite(value) for value in losses):
            return None
        for index, value in enumerate(losses):
            self._sums[index] += float(value)  # type: ignore[arg-type]
        self._count += 1
        if step % bucket_size(total, self.max_points) and step < total:
            return None
        content, style, tv = (value / self._count for value in self._sums)
        self._sums = [0.0, 0.0, 0.0]
        self._count = 0
        return HistoryPoint(step, content, style, tv)
