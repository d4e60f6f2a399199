"""The composed SAE loss: reconstruction normalisation x per-layer sparsity coefficient.

Per token: r = ||x_hat - x||^2 / ||x||^p and s = sum_j |f_j|, with p = 0, 1, 2 for
normalization_method none / input_norm / input_norm_squared. Per layer
L_l = mean_tokens(r) + c_l * mean_tokens(s); the total is the sum over layers.

Coefficients: coeff=alpha gives c_l = alpha; coeff=beta gives c_l = alpha * n_l^k with n_l
the layer's mean input norm (measured once before training) and k = 2 - p by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

NORM_POWER = {"none": 0, "input_norm": 1, "input_norm_squared": 2}
COEFF_MODES = ("alpha", "beta")


def layer_coefficients(
    mode: str, alpha: float, p: int, mean_norm_L: Tensor, k: float | None = None
) -> Tensor:
    """The sparsity coefficient c_l of every layer, given each layer's mean input norm."""
    if alpha < 0:
        raise ValueError(f"coeff.alpha={alpha}; valid: >= 0")
    if mode == "alpha":
        return torch.full(mean_norm_L.shape, float(alpha))
    if mode == "beta":
        return alpha * mean_norm_L.double().pow(2 - p if k is None else k).float()
    raise ValueError(f"coeff={mode!r}; valid: {', '.join(COEFF_MODES)}")


@dataclass
class LossParts:
    total: Tensor  # scalar: sum over layers
    recon_L: Tensor  # mean_tokens(r) per layer (detached)
    sparsity_L: Tensor  # mean_tokens(s) per layer (detached)
    # Per-token quantities the training metrics reuse instead of recomputing (detached):
    sq_err_BL: Tensor  # ||x_hat - x||^2
    l1_BL: Tensor  # sum_j |f_j|


class SAELoss(nn.Module):
    """L = sum_l [ mean_tokens ||x_hat - x||^2 / ||x||^p + c_l * mean_tokens sum_j |f_j| ]."""

    coeff_L: Tensor

    def __init__(self, normalization_method: str, coeff_L: Tensor, eps: float = 1e-8) -> None:
        super().__init__()
        if normalization_method not in NORM_POWER:
            raise ValueError(
                f"normalization_method={normalization_method!r}; valid: {', '.join(NORM_POWER)}"
            )
        self.p = NORM_POWER[normalization_method]
        self.eps = eps
        self.register_buffer("coeff_L", coeff_L.detach().clone().float())

    def forward(self, x_BLD: Tensor, x_hat_BLD: Tensor, f_BLM: Tensor) -> LossParts:
        sq_err_BL = (x_hat_BLD - x_BLD).pow(2).sum(-1)
        r_BL = sq_err_BL
        if self.p:
            r_BL = r_BL / x_BLD.norm(dim=-1).clamp_min(self.eps).pow(self.p)
        s_BL = f_BLM.abs().sum(-1)
        recon_L, sparsity_L = r_BL.mean(0), s_BL.mean(0)
        total = (recon_L + self.coeff_L * sparsity_L).sum()
        return LossParts(
            total, recon_L.detach(), sparsity_L.detach(), sq_err_BL.detach(), s_BL.detach()
        )
