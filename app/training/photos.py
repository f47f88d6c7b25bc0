"""Content photos as a stream of jittered square crops, reproducible from a saved state.

Crops vary in position, scale and mirroring. Position jitter matters for a network with two
stride-2 layers: crops aligned to the same pixel phase teach it a fixed "weave" on the 4-pixel
grid, which shows up as a texture repeating every four pixels at serving time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class SamplerState:
    """Everything that decides the next crops: the RNG, this epoch's photo order and position."""

    generator: Tensor
    order: list[int]
    cursor: int

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, "order": self.order, "cursor": self.cursor}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerState:
        return cls(generator=data["generator"], order=list(data["order"]), cursor=data["cursor"])


class CropSampler:
    """Batches of (N,3,S,S) float crops in 0..1, walking the photos in shuffled epochs."""

    def __init__(self, photos: Sequence[np.ndarray], crop_size: int, seed: int) -> None:
        if not photos:
            raise ValueError("at least one content photo is required")
        self.photos = [_to_tensor(photo) for photo in photos]
        self.crop_size = crop_size
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.order: list[int] = []
        self.cursor = 0

    def state(self) -> SamplerState:
        return SamplerState(self.generator.get_state(), list(self.order), self.cursor)

    def restore(self, state: SamplerState) -> None:
        self.generator.set_state(state.generator)
        self.order, self.cursor = list(state.order), state.cursor

    def next_batch(self, batch_size: int) -> Tensor:
        return torch.cat([self._crop(self.photos[self._next_index()]) for _ in range(batch_size)])

    def jitter(self, period: int) -> tuple[int, int]:
        """A random (dy, dx) offset in 0..period-1, drawn from the same saved stream."""
        offsets = torch.randint(0, period, (2,), generator=self.generator).tolist()
        return offsets[0], offsets[1]

    def _next_index(self) -> int:
        if self.cursor >= len(self.order):
            self.order = torch.randperm(len(self.photos), generator=self.generator).tolist()
            self.cursor = 0
        index = self.order[self.cursor]
        self.cursor += 1
        return index

    def _crop(self, photo: Tensor) -> Tensor:
        """A random square covering 60-100% of the short side (when the photo allows), resized."""
        height, width = photo.shape[-2:]
        short = min(height, width)
        low = min(short, max(self.crop_size, round(short * 0.6)))
        side = int(torch.randint(low, short + 1, (1,), generator=self.generator))
        top = int(torch.randint(0, height - side + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, width - side + 1, (1,), generator=self.generator))
        mirror = bool(torch.randint(0, 2, (1,), generator=self.generator))
        crop = photo[..., top : top + side, left : left + side].float() / 255.0
        if side != self.crop_size:
            crop = F.interpolate(
                crop, size=(self.crop_size, self.crop_size), mode="bilinear",
                align_corners=False, antialias=True,
            ).clamp(0.0, 1.0)  # fmt: skip
        return crop.flip(-1) if mirror else crop


def _to_tensor(photo: np.ndarray) -> Tensor:
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"photos must be HxWx3 uint8 arrays, got {photo.dtype} {photo.shape}")
    # Kept as uint8 (a quarter of the memory); each crop is converted when it is cut.
    return torch.tensor(photo).permute(2, 0, 1)[None]
