"""`sae_type=gated`: the Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary
learning with Gated Sparse Autoencoders").

Two encoder paths share one weight matrix W_gate (stored as W_enc_LDM):
    pi_gate = W_gate (x - b_dec) + b_gate
    pi_mag  = W_mag (x - b_dec) + b_mag,   W_mag = exp(r_mag) * W_gate (row j scaled by
                                           exp(r_mag_j): weight sharing)
    f = 1[pi_gate > 0] * ReLU(pi_mag),     x_hat = W_dec f + b_dec.
The 0/1 gate has no gradient, so the gate path is trained through
    sparsity = sum_j ReLU(pi_gate)_j ||W_dec_j||          (times the coefficient c_l)
    aux      = ||x - x_hat_frozen(ReLU(pi_gate))||^2,
x_hat_frozen(g) = W_dec' g + b_dec' with W_dec', b_dec' frozen copies (no gradient) of the
decoder; aux is normalised by ||x||^p like the reconstruction. The decoder is free (its
norms are in the penalty).

feature_scaling: proportional (b_gate, b_mag, b_dec scale with the input; weights and r_mag
do not). normalization_method: all. coeff: alpha and beta.
Exported as SAELens `gated` (W_enc, b_gate, b_mag, r_mag, W_dec, b_dec; no b_enc).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nsae.saes.base import SAE, TrainOutput


class GatedSAE(SAE, name="gated"):
    l1_weighting = "decoder_norm"  # always: the paper's penalty

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__(n_layers, d_model, n_features)
        del self.b_enc_LM  # two biases instead: b_gate and b_mag
        self.b_gate_LM = nn.Parameter(torch.zeros(n_layers, n_features))
        self.b_mag_LM = nn.Parameter(torch.zeros(n_layers, n_features))
        self.r_mag_LM = nn.Parameter(torch.zeros(n_layers, n_features))

    def gate_and_mag(self, x_BLD: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag) [B, L, M], from one batched matmul."""
        x_LBD = (x_BLD - self.b_dec_LD).transpose(0, 1)
        g_BLM = torch.bmm(x_LBD, self.W_enc_LDM).transpose(0, 1)
        return g_BLM + self.b_gate_LM, g_BLM * self.r_mag_LM.exp() + self.b_mag_LM

    @staticmethod
    def combine(pi_gate_BLM: Tensor, pi_mag_BLM: Tensor) -> Tensor:
        return (pi_gate_BLM > 0).to(pi_mag_BLM.dtype) * torch.relu(pi_mag_BLM)

    def pre_activation(self, x_BLD: Tensor) -> Tensor:
        """The magnitude path's pre-activation pi_mag."""
        return self.gate_and_mag(x_BLD)[1]

    def encode(self, x_BLD: Tensor) -> Tensor:
        return self.combine(*self.gate_and_mag(x_BLD))

    def train_forward(self, x_BLD: Tensor) -> TrainOutput:
        pi_gate_BLM, pi_mag_BLM = self.gate_and_mag(x_BLD)
        f_BLM = self.combine(pi_gate_BLM, pi_mag_BLM)
        x_hat_BLD = self.decode(f_BLM)
        gate_BLM = torch.relu(pi_gate_BLM)
        sparsity_BL = (gate_BLM * self.W_dec_LMD.norm(dim=-1)).sum(-1)
        W_dec_frozen, b_dec_frozen = self.W_dec_LMD.detach(), self.b_dec_LD.detach()
        x_frozen_LBD = torch.baddbmm(
            b_dec_frozen.unsqueeze(1), gate_BLM.transpose(0, 1), W_dec_frozen
        )
        aux_BL = (x_BLD - x_frozen_LBD.transpose(0, 1)).pow(2).sum(-1)
        return TrainOutput(
            x_hat_BLD,
            f_BLM,
            self.fired(pi_gate_BLM, f_BLM),
            sparsity_BL,
            aux_sq_err_BL=aux_BL,
        )

    @torch.no_grad()
    def rescale_layer_(self, i: int, s: float) -> None:
        for b in (self.b_dec_LD, self.b_gate_LM, self.b_mag_LM):
            b[i].mul_(s)

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "gated", "activation_fn_str": "relu"}

    def layer_state(self, i: int) -> dict[str, Tensor]:
        return {
            "W_enc": self.W_enc_LDM[i].detach().clone(),
            "b_gate": self.b_gate_LM[i].detach().clone(),
            "b_mag": self.b_mag_LM[i].detach().clone(),
            "r_mag": self.r_mag_LM[i].detach().clone(),
            "W_dec": self.W_dec_LMD[i].detach().clone(),
            "b_dec": self.b_dec_LD[i].detach().clone(),
        }

    @torch.no_grad()
    def load_layer_state(self, i: int, state: dict[str, Tensor]) -> None:
        for name in ("W_enc_LDM", "b_gate_LM", "b_mag_LM", "r_mag_LM", "W_dec_LMD", "b_dec_LD"):
            getattr(self, name)[i].copy_(state[name.rsplit("_", 1)[0]])
