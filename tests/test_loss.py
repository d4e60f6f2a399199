"""The composed loss against hand-worked values (same tokens as test_saes.py)."""

from __future__ import annotations

import math

import pytest
import torch

from nsae.loss import SAELoss, beta_exponent, layer_coefficients
from nsae.saes.base import TrainOutput

# Token 1: x = [3, 1], x_hat = [2.2, 1.6], f = [2, 0]  -> r = 1.0,  ||x|| = sqrt(10), s = 2
# Token 2: x = [1, 0], x_hat = [1.5, 0],   f = [0, .5] -> r = 0.25, ||x|| = 1,        s = 0.5
X = torch.tensor([[[3.0, 1.0]], [[1.0, 0.0]]])
X_HAT = torch.tensor([[[2.2, 1.6]], [[1.5, 0.0]]])
F = torch.tensor([[[2.0, 0.0]], [[0.0, 0.5]]])
C = 0.5


def out(x_hat: torch.Tensor, f: torch.Tensor) -> TrainOutput:
    return TrainOutput(x_hat, f, f.detach().amax(0) > 0)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("none", (1.0 + 0.25) / 2 + C * 1.25),
        ("input_norm", (1 / math.sqrt(10) + 0.25) / 2 + C * 1.25),
        ("input_norm_squared", (0.1 + 0.25) / 2 + C * 1.25),
    ],
)
def test_loss_by_hand(method: str, expected: float) -> None:
    parts = SAELoss(method, torch.tensor([C]))(X, out(X_HAT, F))
    assert parts.total.item() == pytest.approx(expected, rel=1e-6)
    assert parts.sparsity_L.item() == pytest.approx(1.25)


def test_total_is_sum_over_layers_with_per_layer_coefficients() -> None:
    x = torch.cat([X, 2 * X], dim=1)
    x_hat = torch.cat([X_HAT, 2 * X_HAT], dim=1)
    f = torch.cat([F, F], dim=1)
    parts = SAELoss("none", torch.tensor([C, 2.0]))(x, out(x_hat, f))
    layer0 = 0.625 + C * 1.25
    layer1 = 4 * 0.625 + 2.0 * 1.25  # errors double -> squared errors x4
    assert parts.total.item() == pytest.approx(layer0 + layer1, rel=1e-6)
    torch.testing.assert_close(parts.recon_L, torch.tensor([0.625, 2.5]))


def test_loss_gradient_flows_to_both_terms() -> None:
    f = F.clone().requires_grad_(True)
    x_hat = X_HAT.clone().requires_grad_(True)
    SAELoss("none", torch.tensor([C]))(X, out(x_hat, f)).total.backward()
    torch.testing.assert_close(f.grad, torch.full_like(F, C / 2) * torch.sign(F))
    torch.testing.assert_close(x_hat.grad, (X_HAT - X))  # d/dx_hat mean ||.||^2 = 2(.)/2


@pytest.mark.parametrize("p", [0, 1, 2])
@pytest.mark.parametrize(("scaling", "q"), [("bounded", 0), ("proportional", 1)])
def test_beta_coefficients(p: int, scaling: str, q: int) -> None:
    """k = 2 - p for bounded features, 1 - p for features proportional to the input."""
    n_L = torch.tensor([2.0, 5.0, 40.0])
    assert beta_exponent(p, scaling) == 2 - p - q
    c = layer_coefficients("beta", 0.01, p, n_L, feature_scaling=scaling)
    torch.testing.assert_close(c, 0.01 * n_L ** (2 - p - q))


def test_beta_k_override_and_alpha_mode() -> None:
    n_L = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(layer_coefficients("beta", 1.0, 0, n_L, k=1), n_L)
    torch.testing.assert_close(layer_coefficients("alpha", 0.3, 2, n_L), torch.tensor([0.3, 0.3]))


def test_bad_coefficients_rejected() -> None:
    with pytest.raises(ValueError, match="alpha=-1"):
        layer_coefficients("alpha", -1, 0, torch.ones(2))
    with pytest.raises(ValueError, match="valid: alpha, beta"):
        layer_coefficients("gamma", 1, 0, torch.ones(2))
    with pytest.raises(ValueError, match="valid: none, input_norm, input_norm_squared"):
        SAELoss("l3", torch.ones(1))
