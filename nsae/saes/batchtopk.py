"""`sae_type=batchtopk`: the BatchTopK SAE (Bussmann et al. 2024).

Training: per layer, the k * B largest of ReLU(pre) over the whole batch of B tokens are
kept (so the batch averages k active features per token, one token's count varies); the
rest are zeroed. Decoding is sparse (only the selected decoder rows, `sparse_decode`).

Evaluation (and export) cannot depend on the batch, so each layer learns a threshold:
after every training step theta_l <- (1 - threshold_lr) theta_l + threshold_lr * (the
smallest positive activation kept in layer l), as SAELens and dictionary_learning do; the
first step sets theta_l to that minimum (theta_l < 0 means "not estimated yet"), as
dictionary_learning does. In eval mode f = ReLU(pre) * 1[pre > theta_l] (a JumpReLU with one
threshold per layer), which is how it is exported: SAELens `jumprelu` with threshold
theta_l for every feature.

AuxK dead-latent loss, unit-norm decoder: as for `topk` (nsae/saes/topk.py).
feature_scaling: proportional (theta scales with the input too). No sparsity coefficient:
`coeff.alpha` is unused and `coeff=beta` is refused. normalization_method: all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nsae.saes.base import TrainOutput
from nsae.saes.topk import TopKSAE, dense_entries


class BatchTopKSAE(TopKSAE, name="batchtopk"):
    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_features: int,
        k: float,
        k_aux: int | None = None,
        aux_coeff: float = 1 / 32,
        dead_steps: int = 250,
        threshold_lr: float = 0.01,
    ) -> None:
        super().__init__(n_layers, d_model, n_features, k, k_aux, aux_coeff, dead_steps)  # type: ignore[arg-type]
        if not 0 < threshold_lr <= 1:
            raise ValueError(f"sae.threshold_lr={threshold_lr}; valid: in (0, 1]")
        self.threshold_lr = threshold_lr
        self.register_buffer("threshold_L", torch.full((n_layers,), -1.0))  # < 0: unset

    def check_k(self, k: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k <= self.n_features:
            raise ValueError(f"sae.k={k!r}; valid: a number in (0, {self.n_features}]")

    # -- selection -----------------------------------------------------------------------
    def select_batch(self, pre_BLM: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per layer, the int(k B) largest ReLU(pre) over the batch: (key, feature, value)
        entries (key = b L + l) and the dense f_BLM."""
        B, L, M = pre_BLM.shape
        acts_LN = pre_BLM.relu().transpose(0, 1).reshape(L, B * M)
        val_LK, idx_LK = acts_LN.topk(int(self.k * B), dim=-1, sorted=False)
        f_BLM = acts_LN.new_zeros(L, B * M).scatter(-1, idx_LK, val_LK).view(L, B, M)
        l_LK = torch.arange(L, device=pre_BLM.device).unsqueeze(-1).expand_as(idx_LK)
        key_N = ((idx_LK // M) * L + l_LK).reshape(-1)
        return key_N, (idx_LK % M).reshape(-1), val_LK.reshape(-1), f_BLM.transpose(0, 1)

    def jump(self, pre_BLM: Tensor) -> Tensor:
        """Inference: ReLU(pre) * 1[pre > theta_l] (= pre * 1[pre > theta_l] once theta_l >= 0)."""
        return pre_BLM.relu() * (pre_BLM > self.threshold_L.unsqueeze(-1))

    def activation(self, pre_BLM: Tensor) -> Tensor:
        if self.training:
            return self.select_batch(pre_BLM)[3]
        return self.jump(pre_BLM)

    def forward(self, x_BLD: Tensor) -> tuple[Tensor, Tensor]:
        pre_BLM = self.pre_activation(x_BLD)
        if self.training:
            *entries, f_BLM = self.select_batch(pre_BLM)
        else:
            f_BLM = self.jump(pre_BLM)
            entries = list(dense_entries(f_BLM))
        return self.decode_entries(tuple(entries), x_BLD.shape[0]), f_BLM  # type: ignore[arg-type]

    def train_forward(self, x_BLD: Tensor) -> TrainOutput:
        pre_BLM = self.pre_activation(x_BLD)
        key_N, m_N, v_N, f_BLM = self.select_batch(pre_BLM)
        entries = (key_N, m_N, v_N)
        x_hat_BLD = self.decode_entries(entries, x_BLD.shape[0])
        self.update_threshold(f_BLM)
        extra_BL = self.extra_sq_err(x_BLD, entries)
        return self.finish_train(x_BLD, pre_BLM, f_BLM, x_hat_BLD, extra_BL)

    def extra_sq_err(self, x_BLD: Tensor, entries: tuple[Tensor, Tensor, Tensor]) -> Tensor | None:
        """Further per-token squared errors of the loss (Matryoshka prefixes); none here."""
        return None

    @torch.no_grad()
    def update_threshold(self, f_BLM: Tensor) -> None:
        """theta_l <- (1 - lr) theta_l + lr * min positive f in layer l (if any fired); the
        first estimate is the minimum itself."""
        f_LN = f_BLM.detach().transpose(0, 1).reshape(self.n_layers, -1)
        min_L = f_LN.masked_fill(f_LN <= 0, float("inf")).amin(-1).to(self.threshold_L)
        lr = self.threshold_lr
        updated_L = torch.where(
            self.threshold_L < 0, min_L, (1 - lr) * self.threshold_L + lr * min_L
        )
        self.threshold_L.copy_(torch.where(torch.isfinite(min_L), updated_L, self.threshold_L))

    @torch.no_grad()
    def rescale_layer_(self, i: int, s: float) -> None:
        super().rescale_layer_(i, s)
        self.threshold_L[i].mul_(s)

    # -- export: as SAELens `jumprelu` with the learned threshold --------------------------
    def hparams(self) -> dict[str, object]:
        return super().hparams() | {"threshold_lr": self.threshold_lr}

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "jumprelu"}

    def layer_state(self, i: int) -> dict[str, Tensor]:
        threshold_M = self.threshold_L[i].detach().expand(self.n_features).clone()
        return super().layer_state(i) | {"threshold": threshold_M.float()}

    @torch.no_grad()
    def load_layer_state(self, i: int, state: dict[str, Tensor]) -> None:
        super().load_layer_state(i, state)
        threshold_M = state["threshold"]
        if not torch.all(threshold_M == threshold_M[0]):
            raise ValueError(f"{self.name} takes one threshold per layer; got per-feature ones")
        self.threshold_L[i] = threshold_M[0]
