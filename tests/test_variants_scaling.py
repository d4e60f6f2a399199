"""Beta invariance, for every SAE variant and every normalization: scaling one layer's
activations by s (and its SAE's parameters to match, `SAE.rescale_layer_`) multiplies that
layer's whole loss, with c_l = alpha n_l^k from `layer_coefficients`, by exactly s^(2-p),
and leaves the other layer's loss unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from nsae.loss import NORM_POWER, SAELoss, layer_coefficients
from nsae.saes import SAE, build_sae

S = 10.0
VARIANTS = {
    "none": {},
    "none+decoder_norm": {"l1_weighting": "decoder_norm"},
    "normalized_sae": {"noise_std": 0.1},
    "normalized_sae+decoder_norm": {"noise_std": 0.1, "l1_weighting": "decoder_norm"},
    "topk": {"k": 3, "k_aux": 4, "dead_steps": 1},
    "batchtopk": {"k": 3, "k_aux": 4, "dead_steps": 1},
    "matryoshka": {"k": 3, "k_aux": 4, "dead_steps": 1, "prefixes": [0.25, 0.5]},
    "jumprelu": {"init_threshold": 0.05},
    "gated": {},
}


def primed(variant: str) -> SAE:
    """A 2-layer SAE in float64 with nonzero biases and, for the TopK family, dead
    features (one training step on 2 tokens, dead_steps=1) so that AuxK is active."""
    torch.manual_seed(0)
    sae = build_sae(variant.split("+")[0], 2, 6, 24, **VARIANTS[variant]).double()
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name.startswith("b_"):
                param.copy_(0.3 * torch.randn_like(param))
    sae.train_forward(torch.randn(2, 2, 6, dtype=torch.float64))
    return sae


def loss_parts(sae: SAE, x_BLD: torch.Tensor, method: str):
    n_L = x_BLD.norm(dim=-1).mean(0)
    mode = "beta" if sae.uses_sparsity_coeff else "alpha"
    c_L = layer_coefficients(
        mode, 0.3, NORM_POWER[method], n_L, feature_scaling=sae.sparsity_scaling
    )
    torch.manual_seed(1)  # the same training noise in both runs (normalized_sae)
    out = sae.train_forward(x_BLD)
    return SAELoss(method, c_L.double())(x_BLD, out), out


@pytest.mark.parametrize("method", list(NORM_POWER))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scaling_a_layer_scales_its_loss_by_s_to_the_2_minus_p(variant: str, method: str) -> None:
    sae = primed(variant)
    scaled = copy.deepcopy(sae)
    scaled.rescale_layer_(1, S)
    torch.manual_seed(2)
    x = 5 * torch.randn(64, 2, 6, dtype=torch.float64)
    x_scaled = x.clone()
    x_scaled[:, 1] *= S
    parts, out = loss_parts(sae, x, method)
    parts_s, out_s = loss_parts(scaled, x_scaled, method)

    p = NORM_POWER[method]
    factor = torch.tensor([1.0, S ** (2 - p)], dtype=torch.float64)
    # c_l is stored in float32: agreement to ~1e-7 relative
    torch.testing.assert_close(parts_s.layer_L, factor * parts.layer_L, rtol=1e-6, atol=0)
    # the same SAE in new units: x_hat scales by s, features by s or not at all
    q = 1 if sae.feature_scaling == "proportional" else 0
    torch.testing.assert_close(out_s.x_hat_BLD[:, 1], S * out.x_hat_BLD[:, 1])
    torch.testing.assert_close(out_s.f_BLM[:, 1], S**q * out.f_BLM[:, 1])
    # every term is live, so the invariance is not vacuous
    if sae.uses_sparsity_coeff:
        assert (parts.sparsity_L > 0).all()
    if variant in ("topk", "batchtopk", "matryoshka", "gated"):
        assert out.aux_sq_err_BL is not None and (out.aux_sq_err_BL > 0).all()
