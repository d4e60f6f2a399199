"""`sae_type=normalized_sae`: the Normalized SAE.

f = tanh(ReLU(W_e (x - b_d) + b_e + eps)), eps ~ N(0, noise_std^2) per entry, drawn in
training mode only (never in eval, export or inference). W_d is unconstrained, so the
decoder norms carry each feature's scale while f stays in [0, 1).

feature_scaling: bounded (so the beta exponent is k = 2 - p), unless
`l1_weighting=decoder_norm`: then the penalty sum_j f_j ||W_dec_j|| scales with the input
and k = 1 - p. normalization_method: all. coeff: alpha and beta.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsae import rng
from nsae.saes.base import SAE


class NormalizedSAE(SAE, name="normalized_sae"):
    feature_scaling = "bounded"  # f in [0, 1) whatever the input's scale

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_features: int,
        noise_std: float,
        l1_weighting: str = "none",
    ) -> None:
        super().__init__(n_layers, d_model, n_features)
        if noise_std < 0:
            raise ValueError(f"sae.noise_std={noise_std}; valid: >= 0")
        self.noise_std = noise_std
        self.set_l1_weighting(l1_weighting)

    def activation(self, pre_BLM: Tensor) -> Tensor:
        if self.training and self.noise_std > 0:
            # contiguous noise: randn_like would copy pre's transposed strides, a slow path
            noise = rng.randn(pre_BLM.shape, pre_BLM.dtype, pre_BLM.device)
            pre_BLM = pre_BLM + self.noise_std * noise
        return torch.tanh(torch.relu(pre_BLM))

    def fired(self, pre_BLM: Tensor, f_BLM: Tensor) -> Tensor:
        """Noise-free: tanh(ReLU(pre)) > 0 exactly where pre > 0 (the noise is not in pre)."""
        return pre_BLM.detach().amax(0) > 0

    @torch.no_grad()
    def rescale_layer_(self, i: int, s: float) -> None:
        """Bounded: f must not change, so pre must not: W_e (s x - s b_d) + b_e needs
        W_e -> W_e / s (b_e kept); x_hat -> s x_hat needs W_d -> s W_d."""
        self.b_dec_LD[i].mul_(s)
        self.W_enc_LDM[i].div_(s)
        self.W_dec_LMD[i].mul_(s)

    def hparams(self) -> dict[str, object]:
        return {"noise_std": self.noise_std, "l1_weighting": self.l1_weighting}

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "normalized_sae", "activation_fn_str": "tanh-relu"}
