"""`sae_type=none`: the standard ReLU SAE.

f = ReLU(W_e (x - b_d) + b_e), x_hat = W_d f + b_d, sparsity sum_j |f_j|. Each feature's
decoder vector (a row of W_dec_LMD, a column of W_d) has unit L2 norm: before each optimizer
step the gradient component parallel to it is removed, and after the step it is
renormalised. With `l1_weighting=decoder_norm` the sparsity is sum_j |f_j| ||W_dec_j|| and
the decoder is free (not renormalised).

feature_scaling: proportional. normalization_method: all. coeff: alpha and beta.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsae.saes.base import SAE


class StandardSAE(SAE, name="none"):
    unit_norm_decoder = True

    def __init__(
        self, n_layers: int, d_model: int, n_features: int, l1_weighting: str = "none"
    ) -> None:
        super().__init__(n_layers, d_model, n_features)
        self.set_l1_weighting(l1_weighting)

    def activation(self, pre_BLM: Tensor) -> Tensor:
        return torch.relu(pre_BLM)

    def hparams(self) -> dict[str, object]:
        return {"l1_weighting": self.l1_weighting}

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "standard", "activation_fn_str": "relu"}
