"""The studio's training presets (quick, thorough) and how long each takes on this server.

A step's cost grows with the pixels it pushes through both networks, so a throughput measured
at one crop and batch carries over to another as images/s scaled by crop area. The rate comes
from the latest training job this server finished (measured), else from a declared setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.training.options import TrainOptions

REFERENCE_CROP = 192  # the crop side a declared or normalised images/s figure is quoted at

Basis = Literal["measured", "declared"]
PresetName = Literal["quick", "thorough"]


@dataclass(frozen=True)
class Throughput:
    """Training images per second at REFERENCE_CROP, and where the figure comes from."""

    images_per_s: float
    basis: Basis

    @classmethod
    def measured(cls, images_per_s: float, crop_size: int) -> Throughput:
        """A rate a job reported at `crop_size`, normalised to REFERENCE_CROP."""
        return cls(images_per_s * (crop_size / REFERENCE_CROP) ** 2, "measured")

    def seconds(self, options: TrainOptions) -> float:
        """Estimated wall time of the steps of `options` (loading the networks not included)."""
        area = (options.crop_size / REFERENCE_CROP) ** 2
        return options.iterations * options.batch_size * area / self.images_per_s


@dataclass(frozen=True)
class TrainingPreset:
    name: PresetName
    title: str
    options: TrainOptions


def presets(quick_iterations: int, thorough_iterations: int) -> list[TrainingPreset]:
    """Both presets train with the engine's default crop and batch; only their length differs."""
    return [
        TrainingPreset("quick", "Quick", TrainOptions(iterations=quick_iterations)),
        TrainingPreset("thorough", "Thorough", TrainOptions(iterations=thorough_iterations)),
    ]
