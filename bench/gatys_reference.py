"""The baseline of bench/gatys.py: Gatys, Ecker & Bethge's optimisation as a plain eager fp32 loop.

Written from the paper (Gatys et al. 2016, sections 2-3), not from Atelier's engine: VGG-16
features (torchvision's layout, the in-box weights) with average instead of max pooling, content
at relu4_2, style Gram matrices at relu1_1 ... relu5_1, the image itself optimised by L-BFGS from
the content photo. fp32, channels-first, autograd's own Gram backward: the path a reader of the
paper would write.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg16

# torchvision `features` indices of the paper's taps on VGG-16.
CONTENT = {"relu4_2": 20}
STYLE = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 18, "relu5_1": 25}
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # the in-box weights' input: 0..255 minus this


class ReferenceVGG16(nn.Module):
    def __init__(self, features_state: dict[str, Tensor]) -> None:
        super().__init__()
        features = vgg16(weights=None).features[: max(STYLE.values()) + 1]
        features.load_state_dict(
            {k: v for k, v in features_state.items() if k in features.state_dict()}, strict=True
        )
        for index, layer in enumerate(features):
            if isinstance(layer, nn.MaxPool2d):
                features[index] = nn.AvgPool2d(kernel_size=2, stride=2)
            if isinstance(layer, nn.ReLU):
                features[index] = nn.ReLU(inplace=False)
        self.features = features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, image_01: Tensor) -> dict[int, Tensor]:
        x = image_01 * 255.0 - self.mean
        wanted = set(CONTENT.values()) | set(STYLE.values())
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out[index] = x
        return out


def gram(features: Tensor) -> Tensor:
    n, c, h, w = features.shape
    flat = features.view(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (h * w)


def to_tensor(image: np.ndarray, size: int) -> Tensor:
    tensor = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
    scale = size / max(tensor.shape[-2:])
    target = [round(s * scale) for s in tensor.shape[-2:]]
    return F.interpolate(tensor, size=target, mode="bicubic", antialias=True).clamp(0, 1)


class ReferenceGatys:
    """One optimisation; `step()` is one L-BFGS iteration, which evaluates the objective once."""

    def __init__(
        self,
        content: np.ndarray,
        style: np.ndarray,
        features_state: dict[str, Tensor],
        size: int,
        content_weight: float = 1.0,
        style_weight: float = 1e3,
    ) -> None:
        self.vgg = ReferenceVGG16(features_state)
        photo = to_tensor(content, size)
        with torch.no_grad():
            self.content_target = {
                i: f for i, f in self.vgg(photo).items() if i in CONTENT.values()
            }
            style_features = self.vgg(to_tensor(style, size))
            self.style_targets = {i: gram(style_features[i]) for i in STYLE.values()}
        self.weights = (content_weight, style_weight)
        self.image = photo.clone().requires_grad_(True)
        self.optimizer = torch.optim.LBFGS([self.image], lr=1.0, max_iter=1, history_size=50)
        self.evaluations = 0

    def objective(self) -> Tensor:
        features = self.vgg(self.image)
        content = sum(
            F.mse_loss(features[i], t) / t.pow(2).mean() for i, t in self.content_target.items()
        )
        style = sum(
            (gram(features[i]) - t).pow(2).sum() / t.pow(2).sum()
            for i, t in self.style_targets.items()
        ) / len(self.style_targets)
        return self.weights[0] * content + self.weights[1] * style

    def step(self) -> None:
        def closure() -> Tensor:
            self.optimizer.zero_grad()
            loss = self.objective()
            loss.backward()
            self.evaluations += 1
            return loss

        self.optimizer.step(closure)
