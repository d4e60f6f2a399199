"""Downstream metrics from splicing each layer's reconstruction into the source model."""

from __future__ import annotations

import torch
from torch import Tensor

from nsae.metrics.base import ShapedMetric


class SpliceMetrics(ShapedMetric):
    """Downstream metrics per layer, from the source model's logits with the clean
    activation, with the SAE reconstruction spliced in at that layer only, and with that
    activation zeroed. Each result is [L].

    nsae's own, over every predicted position (all but the last of each context):
      ce_clean, ce_recon, ce_zero: mean next-token cross-entropy;
      reconstruction_score = (ce_zero - ce_recon) / (ce_zero - ce_clean);
      kl = mean per-token KL(P_clean || P_recon).
    SAEBench's (core eval), over the positions in `mask_BT` (see `saebench_mask`: by
    default SAEBench drops positions whose input token is BOS, EOS or pad):
      kl_div_with_sae, kl_div_with_ablation: mean per-token KL(P_clean || P_recon) and
        KL(P_clean || P_zero) over the masked positions, the last one of a context included;
      kl_div_score = (kl_div_with_ablation - kl_div_with_sae) / kl_div_with_ablation;
      ce_loss_without_sae, ce_loss_with_sae, ce_loss_with_ablation: mean next-token CE
        (clean, recon, zero) over the masked predicted positions (input token t, target t+1);
      ce_loss_score = (ce_loss_with_ablation - ce_loss_with_sae)
        / (ce_loss_with_ablation - ce_loss_without_sae).
    """

    NAMES = ("ce_clean", "ce_recon", "ce_zero", "kl", "n")
    SAEBENCH_NAMES = (
        "sb_kl_sae",
        "sb_kl_zero",
        "sb_n_kl",
        "sb_ce_clean",
        "sb_ce_sae",
        "sb_ce_zero",
        "sb_n_ce",
    )

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        for name in self.NAMES + self.SAEBENCH_NAMES:
            self.add_sum_state(name, (n_layers,))

    def update_from_logits(
        self,
        layer_index: int,
        ids_BT: Tensor,
        logits_clean_BTV: Tensor,
        logits_recon_BTV: Tensor,
        logits_zero_BTV: Tensor,
        mask_BT: Tensor | None = None,
    ) -> None:
        """`mask_BT` (bool [B, T]): the positions the SAEBench metrics count; None counts
        every position. nsae's own metrics always count every predicted position."""
        logp_clean = clean_log_probs(logits_clean_BTV)
        recon, zero = (
            token_terms(logp_clean, x, ids_BT) for x in (logits_recon_BTV, logits_zero_BTV)
        )
        self.update(layer_index, ids_BT, logp_clean, recon, zero, mask_BT)

    def update(
        self,
        layer_index: int,
        ids_BT: Tensor,
        logp_clean_BTV: Tensor,
        recon: tuple[Tensor, Tensor],
        zero: tuple[Tensor, Tensor],
        mask_BT: Tensor | None = None,
    ) -> None:
        """One layer's batch, from `clean_log_probs` of the clean logits and the (kl [B, T],
        ce [B, T - 1]) `token_terms` of the reconstruction and the zero ablation (these
        depend on no SAE, so a sweep computes them once: `nsae.data.fixed`)."""
        targets = ids_BT[:, 1:].to(logp_clean_BTV.device)
        ce_BT = {
            "clean": -logp_clean_BTV[:, :-1].gather(-1, targets[..., None]).squeeze(-1),
            "recon": recon[1].to(logp_clean_BTV.device),
            "zero": zero[1].to(logp_clean_BTV.device),
        }
        kl_BT = {
            "recon": recon[0].to(logp_clean_BTV.device),
            "zero": zero[0].to(logp_clean_BTV.device),
        }
        if mask_BT is None:
            mask_BT = torch.ones_like(ids_BT, dtype=torch.bool)
        m_BT = mask_BT.to(logp_clean_BTV.device).double()
        m_ce = m_BT[:, :-1]
        # per-token values in float32, summed over tokens in float64
        sums = {f"ce_{k}": v.double().sum() for k, v in ce_BT.items()}
        sums["kl"] = kl_BT["recon"][:, :-1].double().sum()
        sums["n"] = torch.tensor(float(targets.numel()), dtype=torch.float64)
        sums["sb_kl_sae"] = (kl_BT["recon"].double() * m_BT).sum()
        sums["sb_kl_zero"] = (kl_BT["zero"].double() * m_BT).sum()
        sums["sb_n_kl"] = m_BT.sum()
        for ours, theirs in (("clean", "clean"), ("recon", "sae"), ("zero", "zero")):
            sums[f"sb_ce_{theirs}"] = (ce_BT[ours].double() * m_ce).sum()
        sums["sb_n_ce"] = m_ce.sum()
        for name, value in sums.items():
            state = getattr(self, name).clone()
            state[layer_index] += value.to(state.device)
            setattr(self, name, state)

    def compute(self) -> dict[str, Tensor]:
        ce = {k: getattr(self, f"ce_{k}") / self.n for k in ("clean", "recon", "zero")}
        kl_sae, kl_zero = self.sb_kl_sae / self.sb_n_kl, self.sb_kl_zero / self.sb_n_kl
        sb_ce = {k: getattr(self, f"sb_ce_{k}") / self.sb_n_ce for k in ("clean", "sae", "zero")}
        return {
            "reconstruction_score": (ce["zero"] - ce["recon"]) / (ce["zero"] - ce["clean"]),
            "kl": self.kl / self.n,
            "ce_clean": ce["clean"],
            "ce_recon": ce["recon"],
            "ce_zero": ce["zero"],
            "kl_div_score": (kl_zero - kl_sae) / kl_zero,
            "kl_div_with_sae": kl_sae,
            "kl_div_with_ablation": kl_zero,
            "ce_loss_score": (sb_ce["zero"] - sb_ce["sae"]) / (sb_ce["zero"] - sb_ce["clean"]),
            "ce_loss_with_sae": sb_ce["sae"],
            "ce_loss_with_ablation": sb_ce["zero"],
            "ce_loss_without_sae": sb_ce["clean"],
        }


def clean_log_probs(logits_clean_BTV: Tensor) -> Tensor:
    """The clean model's log-probabilities in float32, [B, T, V]."""
    return torch.log_softmax(logits_clean_BTV.float(), dim=-1)


def token_terms(
    logp_clean_BTV: Tensor, logits_BTV: Tensor, ids_BT: Tensor
) -> tuple[Tensor, Tensor]:
    """Per token, for logits with one layer changed: (KL(P_clean || P) [B, T], next-token
    cross-entropy [B, T - 1] at the predicting positions), float32."""
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    kl_BT = (logp_clean_BTV.exp() * (logp_clean_BTV - logp_BTV)).sum(-1)
    targets = ids_BT[:, 1:].to(logp_BTV.device)
    ce_BT = -logp_BTV[:, :-1].gather(-1, targets[..., None]).squeeze(-1)
    return kl_BT, ce_BT
