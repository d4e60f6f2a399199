"""`sae_type=none`: the standard ReLU SAE with unit-norm decoder rows.

f = ReLU(W_e (x - b_d) + b_e), x_hat = W_d f + b_d. Each feature's decoder vector
(a row of W_dec_LMD, a column of W_d) has unit L2 norm: before each optimizer step the
gradient component parallel to it is removed, and after the step it is renormalised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nsae.saes.base import SAE


class StandardSAE(SAE, name="none"):
    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__(n_layers, d_model, n_features)
        self.after_optimizer_step()

    def activation(self, pre_BLM: Tensor) -> Tensor:
        return torch.relu(pre_BLM)

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        W, g = self.W_dec_LMD, self.W_dec_LMD.grad
        if g is not None:
            unit = W / W.norm(dim=-1, keepdim=True)
            g.sub_((g * unit).sum(-1, keepdim=True) * unit)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.W_dec_LMD.div_(self.W_dec_LMD.norm(dim=-1, keepdim=True))

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "standard", "activation_fn_str": "relu"}
