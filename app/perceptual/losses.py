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
from torch.autograd.function import FunctionCtx

_EPS = 1e-8  # guards against a blank (all-zero) target, e.g. a flat colour style image


def gram_matrix(features: Tensor) -> Tensor:
    """Channel co-activations G = F F^T / (H*W): (N,C,H,W) -> (N,C,C), at least fp32.

    The product runs in the autocast dtype when autocast is on (bf16 matrix units are the fast
    path; accumulation is fp32 either way). Its backward is one batched product instead of the
    two autograd would run, since G is symmetric (`_Gram`), and channels-last features are read
    in place instead of being copied to channels-first first.
    """
    if features.dim() != 4:
        raise ValueError(f"expected (N,C,H,W) features, got shape {tuple(features.shape)}")
    return _Gram.apply(features)


class _Gram(torch.autograd.Function):
    """G = X X^T / P over the P = H*W positions, with the symmetric backward dX = (dG + dG^T) X / P.

    X is read in whichever layout the features have (C x P rows for channels-first, P x C for
    channels-last), so neither direction copies the features into another layout.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, features: Tensor) -> Tensor:
        n, c, h, w = features.shape
        compute = _compute_dtype(features)
        by_position = _is_channels_last(features)
        if by_position:
            x = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        else:
            x = features.reshape(n, c, h * w)
        x = x.to(compute)
        with torch.autocast(features.device.type, enabled=False):
            gram = (
                torch.bmm(x.transpose(1, 2), x) if by_position else torch.bmm(x, x.transpose(1, 2))
            )
        ctx.save_for_backward(x)
        ctx.shape, ctx.by_position, ctx.dtype = (n, c, h, w), by_position, features.dtype
        return gram.to(torch.promote_types(features.dtype, torch.float32)) / (h * w)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        n, c, h, w = ctx.shape
        with torch.autocast(grad.device.type, enabled=False):
            symmetric = ((grad + grad.transpose(1, 2)) / (h * w)).to(x.dtype)
            if ctx.by_position:
                rows = torch.bmm(x, symmetric)
                return rows.to(ctx.dtype).reshape(n, h, w, c).permute(0, 3, 1, 2)
            return torch.bmm(symmetric, x).to(ctx.dtype).reshape(n, c, h, w)


def _compute_dtype(features: Tensor) -> torch.dtype:
    """What torch.bmm under the current autocast would compute fp32 features in."""
    device = features.device.type
    if torch.is_autocast_enabled(device) and features.dtype == torch.float32:
        return torch.get_autocast_dtype(device)
    return features.dtype


def _is_channels_last(features: Tensor) -> bool:
    return (
        features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    )


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared feature error relative to the target's mean energy (scale-free)."""
    return (features - target).pow(2).mean() / content_energy(target)


def content_energy(target: Tensor) -> Tensor:
    """What `content_loss` divides by; tiled evaluation sums the errors over tiles first."""
    return target.pow(2).mean() + _EPS


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
