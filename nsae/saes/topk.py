"""`sae_type=topk`: the TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"), and the sparse decoding and AuxK loss its family shares.

f = ReLU(TopK_k(W_e (x - b_d) + b_e)): per token, the k largest pre-activations, then ReLU
(so a token whose k-th largest pre-activation is <= 0 has fewer than k active features).
x_hat = b_d + sum over the k active j of f_j W_dec_j, decoded sparsely: only the k active
decoder rows are gathered (`sparse_decode`, an embedding bag), never a dense M x D product.
Decoder rows have unit norm (as for the standard SAE).

AuxK (dead-latent loss): feature j is dead when it has not fired for `dead_steps` training
steps (calls of `train_forward`; a [L, M] steps-since-fired buffer). With e = x - x_hat
(no gradient) and e_hat = the decoding, without b_d, of the k_aux largest pre-activations
among dead features (ReLU'd), each token adds
    aux_coeff * min(n_dead / k_aux, 1) * ||e - e_hat||^2
to the loss, normalised by ||x||^p like the reconstruction (so it scales like it).

feature_scaling: proportional. There is no sparsity coefficient (sparsity is set by k):
`coeff.alpha` is unused and `coeff=beta` is refused. normalization_method: all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nsae.saes.base import SAE, TrainOutput


def sparse_decode(
    W_dec_LMD: Tensor, key_N: Tensor, m_N: Tensor, v_N: Tensor, n_tokens: int
) -> Tensor:
    """sum_n v_n W_dec[l_n, m_n] into token key_n = b_n * L + l_n, as [B, L, D] (no bias).

    One embedding bag per (token, layer) over the rows of the flattened [L*M, D] decoder,
    weighted by v: only the listed rows are read, and gradients reach W_dec and v."""
    L, M, D = W_dec_LMD.shape
    order_N = key_N.argsort(stable=True)
    key_N, m_N, v_N = key_N[order_N], m_N[order_N], v_N[order_N]
    counts = torch.zeros(n_tokens * L, dtype=torch.long, device=key_N.device)
    counts.index_add_(0, key_N, torch.ones_like(key_N))
    offsets = counts.cumsum(0) - counts
    rows_N = (key_N % L) * M + m_N
    W_flat = W_dec_LMD.reshape(L * M, D)
    out = F.embedding_bag(rows_N, W_flat, offsets, mode="sum", per_sample_weights=v_N.to(W_flat))
    return out.view(n_tokens, L, D)


def topk_entries(idx_BLK: Tensor, val_BLK: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token top-k (indices, values) [B, L, K] as flat (key, feature, value) entries."""
    B, L, K = idx_BLK.shape
    key_BL = torch.arange(B * L, device=idx_BLK.device).view(B, L)
    key_N = key_BL.unsqueeze(-1).expand(B, L, K).reshape(-1)
    return key_N, idx_BLK.reshape(-1), val_BLK.reshape(-1)


def dense_from_topk(idx_BLK: Tensor, val_BLK: Tensor, n_features: int) -> Tensor:
    B, L, _ = idx_BLK.shape
    f_BLM = val_BLK.new_zeros(B, L, n_features)
    return f_BLM.scatter(-1, idx_BLK, val_BLK)


def dense_entries(f_BLM: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The nonzero entries of a dense [B, L, M] (a host sync: evaluation only)."""
    b_N, l_N, m_N = f_BLM.nonzero(as_tuple=True)
    return b_N * f_BLM.shape[1] + l_N, m_N, f_BLM[b_N, l_N, m_N]


class TopKSAE(SAE, name="topk"):
    unit_norm_decoder = True
    uses_sparsity_coeff = False

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_features: int,
        k: int,
        k_aux: int | None = None,
        aux_coeff: float = 1 / 32,
        dead_steps: int = 250,
    ) -> None:
        super().__init__(n_layers, d_model, n_features)
        self.check_k(k)
        k_aux = d_model // 2 if k_aux is None else k_aux
        for key, value in (("k_aux", k_aux), ("dead_steps", dead_steps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"sae.{key}={value!r}; valid: an integer >= 1")
        if aux_coeff < 0:
            raise ValueError(f"sae.aux_coeff={aux_coeff}; valid: >= 0")
        self.k, self.k_aux, self.aux_coeff, self.dead_steps = k, k_aux, aux_coeff, dead_steps
        self.register_buffer(
            "steps_since_fired_LM", torch.zeros(n_layers, n_features, dtype=torch.long)
        )
        self.train_steps = 0  # train_forward calls; in the state dict as extra state

    def check_k(self, k: Any) -> None:
        if not isinstance(k, int) or not 1 <= k <= self.n_features:
            raise ValueError(f"sae.k={k!r}; valid: an integer in 1..{self.n_features}")

    # -- forward -------------------------------------------------------------------------
    def select(self, pre_BLM: Tensor) -> tuple[Tensor, Tensor]:
        """The k largest pre-activations per token, ReLU'd: (indices, values) [B, L, k]."""
        val_BLK, idx_BLK = pre_BLM.topk(self.k, dim=-1, sorted=False)
        return idx_BLK, val_BLK.relu()

    def activation(self, pre_BLM: Tensor) -> Tensor:
        return dense_from_topk(*self.select(pre_BLM), self.n_features)

    def decode_entries(self, entries: tuple[Tensor, Tensor, Tensor], n_tokens: int) -> Tensor:
        return self.b_dec_LD + sparse_decode(self.W_dec_LMD, *entries, n_tokens)

    def forward(self, x_BLD: Tensor) -> tuple[Tensor, Tensor]:
        idx_BLK, val_BLK = self.select(self.pre_activation(x_BLD))
        x_hat_BLD = self.decode_entries(topk_entries(idx_BLK, val_BLK), x_BLD.shape[0])
        return x_hat_BLD, dense_from_topk(idx_BLK, val_BLK, self.n_features)

    def train_forward(self, x_BLD: Tensor) -> TrainOutput:
        pre_BLM = self.pre_activation(x_BLD)
        idx_BLK, val_BLK = self.select(pre_BLM)
        f_BLM = dense_from_topk(idx_BLK, val_BLK, self.n_features)
        x_hat_BLD = self.decode_entries(topk_entries(idx_BLK, val_BLK), x_BLD.shape[0])
        return self.finish_train(x_BLD, pre_BLM, f_BLM, x_hat_BLD)

    def finish_train(
        self,
        x_BLD: Tensor,
        pre_BLM: Tensor,
        f_BLM: Tensor,
        x_hat_BLD: Tensor,
        extra_sq_err_BL: Tensor | None = None,
    ) -> TrainOutput:
        """Dead-feature bookkeeping and the AuxK term; no sparsity penalty (zeros)."""
        fired_LM = self.fired(pre_BLM, f_BLM)
        aux_BL = self.auxk_sq_err(x_BLD, x_hat_BLD, pre_BLM, self.dead_mask())
        self.steps_since_fired_LM.add_(1).masked_fill_(fired_LM, 0)
        self.train_steps += 1
        if extra_sq_err_BL is not None:
            aux_BL = extra_sq_err_BL if aux_BL is None else aux_BL + extra_sq_err_BL
        sparsity_BL = x_BLD.new_zeros(x_BLD.shape[:2])
        return TrainOutput(x_hat_BLD, f_BLM, fired_LM, sparsity_BL, aux_sq_err_BL=aux_BL)

    # -- AuxK ----------------------------------------------------------------------------
    def dead_mask(self) -> Tensor | None:
        """[L, M] bool: not fired in the last `dead_steps` steps; None before any can be
        (no feature is dead in the first `dead_steps` steps: skips the work, no host sync)."""
        if self.train_steps < self.dead_steps or self.aux_coeff == 0:
            return None
        return self.steps_since_fired_LM >= self.dead_steps

    def auxk_sq_err(
        self, x_BLD: Tensor, x_hat_BLD: Tensor, pre_BLM: Tensor, dead_LM: Tensor | None
    ) -> Tensor | None:
        """aux_coeff * min(n_dead / k_aux, 1) * ||e - e_hat||^2 per token (module doc)."""
        if dead_LM is None:
            return None
        e_BLD = (x_BLD - x_hat_BLD).detach()
        k_aux = min(self.k_aux, self.n_features)
        masked_BLM = pre_BLM.masked_fill(~dead_LM, float("-inf"))
        val_BLK, idx_BLK = masked_BLM.topk(k_aux, dim=-1, sorted=False)
        e_hat_BLD = sparse_decode(
            self.W_dec_LMD, *topk_entries(idx_BLK, val_BLK.relu()), x_BLD.shape[0]
        )
        scale_L = (dead_LM.sum(-1) / self.k_aux).clamp(max=1.0).to(x_BLD.dtype)
        return self.aux_coeff * scale_L * (e_hat_BLD - e_BLD).pow(2).sum(-1)

    def get_extra_state(self) -> dict[str, int]:
        return {"train_steps": self.train_steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.train_steps = int(state["train_steps"])

    # -- export --------------------------------------------------------------------------
    def hparams(self) -> dict[str, object]:
        return {
            "k": self.k,
            "k_aux": self.k_aux,
            "aux_coeff": self.aux_coeff,
            "dead_steps": self.dead_steps,
        }

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "topk", "k": self.k, "rescale_acts_by_decoder_norm": False}
