"""The baseline of bench/train.py: Johnson et al.'s training step as a plain eager fp32 loop.

Written from the paper (Johnson, Alahi & Fei-Fei 2016, section 3) and pytorch/examples'
`fast_neural_style/neural_style.py`, not from Atelier's engine: TransformerNet (the paper's
network; the same module Atelier serves), VGG-16 features sliced at relu1_2, relu2_2, relu3_3 and
relu4_3, content loss at relu2_2, Gram style losses at all four, Adam. Each step cuts a batch of
random square crops from the photos, runs the loss network on output and photo alike (with
autograd, as the example does), and steps the optimiser. No autocast, no channels-last, no custom
kernels: the default path a reader of the paper would write.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg16

from app.nets.transformer_net import TransformerNet

# torchvision `features` indices of the four ReLUs the paper taps.
SLICE_ENDS = {"relu1_2": 4, "relu2_2": 9, "relu3_3": 16, "relu4_3": 23}
CONTENT_WEIGHT = 1e5
STYLE_WEIGHT = 1e10
# The in-box VGG-16 weights are the Caffe release: 0..255 RGB minus this mean, unscaled.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


class ReferenceVGG16(nn.Module):
    """torchvision's VGG-16 `features` up to relu4_3, returning the four tapped activations."""

    def __init__(self, features_state: dict[str, Tensor]) -> None:
        super().__init__()
        features = vgg16(weights=None).features[: SLICE_ENDS["relu4_3"]]
        features.load_state_dict(
            {k: v for k, v in features_state.items() if k in features.state_dict()}, strict=True
        )
        self.features = features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, image_255: Tensor) -> dict[str, Tensor]:
        x = image_255 - self.mean
        out, start = {}, 0
        for name, end in SLICE_ENDS.items():
            x = self.features[start:end](x)
            out[name] = x
            start = end
        return out


def gram(features: Tensor) -> Tensor:
    n, c, h, w = features.shape
    flat = features.view(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


class ReferenceTrainer:
    """One run of the reference loop; `step()` is one optimiser step on a fresh batch."""

    def __init__(
        self,
        photos: Sequence[np.ndarray],
        painting: np.ndarray,
        vgg_features_state: dict[str, Tensor],
        batch_size: int,
        crop_size: int,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.photos = [torch.tensor(p).permute(2, 0, 1).float() for p in photos]
        self.batch_size, self.crop_size = batch_size, crop_size
        self.generator = torch.Generator().manual_seed(seed)
        self.net = TransformerNet().train()
        self.vgg = ReferenceVGG16(vgg_features_state)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        style = torch.tensor(painting).permute(2, 0, 1).float()[None]
        with torch.no_grad():
            self.style_grams = {k: gram(v) for k, v in self.vgg(style).items()}

    def batch(self) -> Tensor:
        """Random crops, each photo first scaled so its short side is the crop size."""
        crops = []
        for _ in range(self.batch_size):
            index = int(torch.randint(len(self.photos), (1,), generator=self.generator))
            photo = self.photos[index][None]
            scale = self.crop_size / min(photo.shape[-2:])
            size = [max(self.crop_size, round(s * scale)) for s in photo.shape[-2:]]
            photo = F.interpolate(photo, size=size, mode="bilinear", align_corners=False)
            top = int(torch.randint(size[0] - self.crop_size + 1, (1,), generator=self.generator))
            left = int(torch.randint(size[1] - self.crop_size + 1, (1,), generator=self.generator))
            crops.append(photo[..., top : top + self.crop_size, left : left + self.crop_size])
        return torch.cat(crops)

    def step(self) -> float:
        x = self.batch()
        self.optimizer.zero_grad()
        y = self.net(x)
        features_y = self.vgg(y)
        features_x = self.vgg(x)
        content = CONTENT_WEIGHT * F.mse_loss(features_y["relu2_2"], features_x["relu2_2"])
        style = 0.0
        for name, target in self.style_grams.items():
            style = style + F.mse_loss(gram(features_y[name]), target.expand(len(x), -1, -1))
        total = content + STYLE_WEIGHT * style
        total.backward()
        self.optimizer.step()
        return float(total.detach())
