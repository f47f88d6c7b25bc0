"""The terms of the Gatys objective.

Gram matrices are normalised by the number of positions (H*W) as in the paper, so they do not
depend on image size and a style image of any resolution can be compared with the output. The
style and content errors are further divided by the target's own energy: every layer then
contributes an O(1) relative error whatever its activation scale, which is what lets a single
pair of weights work across layers and across backbones (VGG activations are ~100x larger than
EfficientNet's ReLU6-clipped ones).
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-8  # guards against a blank (all-zero) target, e.g. a flat colour style image


def gram_matrix(features: Tensor) -> Tensor:
    """Channel co-activations G = F F^T / (H*W): (N,C,H,W) -> (N,C,C)."""
    if features.dim() != 4:
        raise ValueError(f"expected (N,C,H,W) features, got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared feature error relative to the target's mean energy (scale-free)."""
    return (features - target).pow(2).mean() / (target.pow(2).mean() + _EPS)


def style_loss(gram: Tensor, target_gram: Tensor) -> Tensor:
    """||G - G_s||^2 / ||G_s||^2: the paper's Gram error, made relative to the target."""
    return (gram - target_gram).pow(2).sum() / (target_gram.pow(2).sum() + _EPS)


def total_variation_loss(image: Tensor) -> Tensor:
    """Mean squared difference over all horizontal and vertical neighbour pairs.

    Penalises the high-frequency noise that gradient ascent on a strided network leaves behind.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return (dx.pow(2).sum() + dy.pow(2).sum()) / (dx.numel() + dy.numel())
