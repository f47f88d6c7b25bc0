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


def _autograd_gram(features: torch.Tensor) -> torch.Tensor:
    """The textbook formula, differentiated by autograd: the reference for the custom backward."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_backward_passes_gradcheck_in_both_layouts(layout: torch.memory_format) -> None:
    features = torch.randn(
        2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    features = features.contiguous(memory_format=layout).requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (features,))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_equals_autograds_of_the_formula(layout: torch.memory_format) -> None:
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(2, 16, 9, 7, generator=generator)
    weights = torch.randn(2, 16, 16, generator=generator)  # a non-symmetric upstream gradient
    ours = base.clone(memory_format=layout).requires_grad_(True)
    reference = base.clone().requires_grad_(True)
    (gram_matrix(ours) * weights).sum().backward()
    (_autograd_gram(reference) * weights).sum().backward()
    assert ours.grad is not None and reference.grad is not None
    assert ours.grad.shape == base.shape
    assert torch.allclose(ours.grad, reference.grad, atol=1e-5, rtol=1e-5)


def test_gram_under_bf16_autocast_matches_autograds_bf16_product() -> None:
    generator = torch.Generator().manual_seed(4)
    base = torch.randn(2, 32, 8, 8, generator=generator)
    weights = torch.randn(2, 32, 32, generator=generator)
    ours = base.clone(memory_format=torch.channels_last).requires_grad_(True)
    reference = base.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(ours)
        expected = _autograd_gram(reference)
    assert gram.dtype == torch.float32 and expected.dtype == torch.bfloat16
    # Both round the same fp32-accumulated products to bf16 (8 significant bits).
    assert torch.allclose(gram, expected.float(), rtol=1e-2, atol=1e-2)
    (gram * weights).sum().backward()
    (expected.float() * weights).sum().backward()
    assert ours.grad is not None and reference.grad is not None
    exact = base.clone().requires_grad_(True)
    (_autograd_gram(exact) * weights).sum().backward()
    assert exact.grad is not None
    # bf16 keeps about 3 significant digits; both paths are that close to the fp32 gradient.
    scale = exact.grad.abs().max()
    assert (ours.grad - exact.grad).abs().max() < 0.02 * scale
    assert (reference.grad - exact.grad).abs().max() < 0.02 * scale
