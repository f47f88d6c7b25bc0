"""Loss terms against numbers worked out by hand or by plain loops, never by the code under test."""

from __future__ import annotations

import pytest
import torch

from app.perceptual.losses import content_loss, gram_matrix, style_loss, total_variation_loss


def test_gram_matrix_matches_hand_computation() -> None:
    # Two channels on a 2x2 grid: a = [1, 2, 3, 4], b = [0, 1, -1, 2], H*W = 4.
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [-1.0, 2.0]]]])
    # a.a = 1+4+9+16 = 30, a.b = 0+2-3+8 = 7, b.b = 0+1+1+4 = 6; each divided by 4.
    expected = torch.tensor([[[7.5, 1.75], [1.75, 1.5]]])
    assert torch.allclose(gram_matrix(features), expected)


def test_gram_matrix_matches_loops_per_sample() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    n, c, h, w = features.shape
    expected = torch.zeros(n, c, c, dtype=torch.float64)
    for sample in range(n):
        for i in range(c):
            for j in range(c):
                total = 0.0
                for y in range(h):
                    for x in range(w):
                        total += float(features[sample, i, y, x] * features[sample, j, y, x])
                expected[sample, i, j] = total / (h * w)
    assert torch.allclose(gram_matrix(features), expected)


def test_gram_matrix_does_not_depend_on_image_size() -> None:
    # Tiling a feature map repeats every position equally often: the normalised Gram is unchanged.
    features = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    tiled = features.repeat(1, 1, 2, 3)
    assert torch.allclose(gram_matrix(tiled), gram_matrix(features), atol=1e-6)


def test_gram_matrix_rejects_unbatched_features() -> None:
    with pytest.raises(ValueError, match="N,C,H,W"):
        gram_matrix(torch.zeros(3, 4, 4))


def test_content_loss_is_relative_mse() -> None:
    features = torch.tensor([[[[3.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    # MSE = (2^2 + 0^2) / 2 = 2; mean(target^2) = 1.
    assert content_loss(features, target).item() == pytest.approx(2.0)
    # Scale-free: the same relative error at 10x the activation scale costs the same.
    assert content_loss(10 * features, 10 * target).item() == pytest.approx(2.0)
    assert content_loss(target, target).item() == 0.0


def test_style_loss_is_relative_squared_error() -> None:
    gram = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # ||G - Gs||^2 = 1, ||Gs||^2 = 2.
    assert style_loss(gram, target).item() == pytest.approx(0.5)
    assert style_loss(target, target).item() == 0.0


def test_total_variation_is_mean_squared_neighbour_difference() -> None:
    image = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # Horizontal pairs (0,1), (1,1); vertical pairs (0,1), (1,1): squares 1, 0, 1, 0 -> mean 0.5.
    assert total_variation_loss(image).item() == pytest.approx(0.5)
    assert total_variation_loss(torch.full((1, 3, 5, 7), 0.3)).item() == 0.0


def test_losses_give_gradients() -> None:
    image = torch.rand(1, 3, 6, 6, requires_grad=True)
    loss = total_variation_loss(image) + style_loss(gram_matrix(image), torch.eye(3)[None])
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
