"""The composed SAE loss: reconstruction normalisation x per-layer sparsity coefficient.

Per token: r = ||x_hat - x||^2 / ||x||^p and s = sum_j |f_j| (or the variant's own
penalty, `TrainOutput.sparsity_BL`), with p = 0, 1, 2 for normalization_method none /
input_norm / input_norm_squared. Per layer
L_l = mean_tokens(r) + c_l * mean_tokens(s) + mean_tokens(a / ||x||^p) + aux_l,
with a the variant's extra squared errors (`aux_sq_err_BL`: AuxK, the gated auxiliary
reconstruction, Matryoshka prefixes), normalised like r so that they scale like it, and
aux_l any other per-layer term; the total is the sum over layers.

Coefficients: coeff=alpha gives c_l = alpha; coeff=beta gives c_l = alpha * n_l^k with n_l
the layer's mean input norm (measured once before training) and k from `beta_exponent`.

Why k: scale one layer's activations by s (and its SAE's parameters with them, so the
SAE computes the same thing in the new units: `SAE.rescale_layer_`). The reconstruction
term ||x_hat - x||^2 / ||x||^p scales by s^2 / s^p = s^(2-p), and so do the extra squared
errors a. The sparsity term scales by s^q: sum_j |f_j| has q = 1 for features proportional
to the input (ReLU, TopK, ...) and q = 0 for bounded ones (the Normalized SAE's tanh); in
general q is how the variant's penalty scales (`SAE.sparsity_scaling`): an L0 count
(JumpReLU) has q = 0, a decoder-norm weighted sum_j |f_j| ||W_dec_j|| has q = 1. For the
layer's whole loss to be a multiple of the unscaled one (the same optimum), c_l must scale
by s^(2-p-q): since n_l scales by s, c_l = alpha * n_l^k with k = 2 - p - q, i.e.
k = 2 - p for a bounded penalty and k = 1 - p for a proportional one. A cell with k = 0 is
its alpha cell by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nsae.constants import COEFF_MODES
from nsae.saes.base import TrainOutput

NORM_POWER = {"none": 0, "input_norm": 1, "input_norm_squared": 2}


FEATURE_POWER = {"proportional": 1, "bounded": 0}


def beta_exponent(p: int, feature_scaling: str) -> int:
    """The default k of coeff=beta: 2 - p - q, q = 1 for a proportional penalty, 0 for a
    bounded one (pass `SAE.sparsity_scaling`; see the module docstring)."""
    if feature_scaling not in FEATURE_POWER:
        raise ValueError(f"feature_scaling={feature_scaling!r}; valid: {', '.join(FEATURE_POWER)}")
    return 2 - p - FEATURE_POWER[feature_scaling]


def layer_coefficients(
    mode: str,
    alpha: float,
    p: int,
    mean_norm_L: Tensor,
    k: float | None = None,
    feature_scaling: str = "bounded",
) -> Tensor:
    """The sparsity coefficient c_l of every layer, given each layer's mean input norm.
    `k=None` takes `beta_exponent(p, feature_scaling)`."""
    if alpha < 0:
        raise ValueError(f"coeff.alpha={alpha}; valid: >= 0")
    if mode == "alpha":
        return torch.full(mean_norm_L.shape, float(alpha))
    if mode == "beta":
        exponent = beta_exponent(p, feature_scaling) if k is None else k
        return alpha * mean_norm_L.double().pow(exponent).float()
    raise ValueError(f"coeff={mode!r}; valid: {', '.join(COEFF_MODES)}")


@dataclass
class LossParts:
    total: Tensor  # scalar: sum over layers
    recon_L: Tensor  # mean_tokens(r) per layer (detached)
    sparsity_L: Tensor  # mean_tokens(s) per layer (detached)
    # Per-token quantities the training metrics reuse instead of recomputing (detached):
    sq_err_BL: Tensor  # ||x_hat - x||^2
    l1_BL: Tensor  # sum_j |f_j|
    layer_L: Tensor | None = None  # each layer's whole loss L_l (detached)


class SAELoss(nn.Module):
    """L = sum_l [ mean_tokens ||x_hat - x||^2 / ||x||^p + c_l * mean_tokens s
    + mean_tokens a / ||x||^p + aux_l ] (module docstring)."""

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

    def forward(self, x_BLD: Tensor, out: TrainOutput, coeff_scale: float = 1.0) -> LossParts:
        """`coeff_scale` multiplies every c_l (the sparsity warm-up, nsae/schedule.py)."""
        sq_err_BL = (out.x_hat_BLD - x_BLD).pow(2).sum(-1)
        norm_p_BL = x_BLD.norm(dim=-1).clamp_min(self.eps).pow(self.p) if self.p else None
        r_BL = sq_err_BL if norm_p_BL is None else sq_err_BL / norm_p_BL
        l1_BL = out.f_BLM.abs().sum(-1)
        s_BL = l1_BL if out.sparsity_BL is None else out.sparsity_BL
        recon_L, sparsity_L = r_BL.mean(0), s_BL.mean(0)
        layer_L = recon_L + (self.coeff_L * coeff_scale) * sparsity_L
        if out.aux_sq_err_BL is not None:
            a_BL = out.aux_sq_err_BL
            a_BL = a_BL if norm_p_BL is None else a_BL / norm_p_BL
            layer_L = layer_L + a_BL.mean(0)
        if out.aux_L is not None:
            layer_L = layer_L + out.aux_L
        return LossParts(
            layer_L.sum(),
            recon_L.detach(),
            sparsity_L.detach(),
            sq_err_BL.detach(),
            l1_BL.detach(),
            layer_L.detach(),
        )
