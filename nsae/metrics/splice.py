"""Downstream metrics from splicing each layer's reconstruction into the source model."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from nsae.metrics.base import ShapedMetric


class SpliceMetrics(ShapedMetric):
    """Downstream metrics per layer, from the source model's logits with the clean
    activation, with the SAE reconstruction spliced in at that layer only, and with that
    activation zeroed. Each result is [L].

    nsae's own, over every predicted position (all but the last of each context), with the
    reconstruction spliced in at every position (every harvested one):
      ce_clean, ce_recon, ce_zero: mean next-token cross-entropy;
      reconstruction_score = (ce_zero - ce_recon) / (ce_zero - ce_clean);
      kl = mean per-token KL(P_clean || P_recon).

    SAEBench's (its core eval, as `sae_lens.evals.run_evals(..., exclude_special_tokens=True)`
    computes it in sae_lens/evals.py, sae_lens 6.54; SAEBench's own copy,
    sae_bench/evals/core/main.py, does the same with its `exclude_special_tokens_from_
    reconstruction` option on), with `mask_BT` the positions whose input token is not BOS,
    EOS or pad (`saebench_mask`; sae_lens: `get_special_token_ids` of the tokenizer, the ids
    compared with `batch_tokens == token` in `get_recons_loss` and its caller):
    - the SAE forward (`get_recons_loss`, `standard_replacement_hook`) replaces the hooked
      activation by the reconstruction only where the mask is True and keeps the original
      activation at BOS, EOS and pad positions (`torch.where(mask, x_hat, x)`), so the
      reconstruction at a special position reaches no later position; nsae's own metrics
      splice it there too, which is the only difference between the two forwards (when a
      batch has no special position they are the same forward, run once);
    - the zero ablation (`standard_zero_ablate_hook`) zeroes the activation at EVERY
      position, special ones included (no mask): the same forward as nsae's `ce_zero`;
    - KL (`_kl`): per position KL(P_clean || P) = sum_v p_clean (log p_clean - log p), over
      all T positions of a context (the last one included), then the masked positions kept
      (`get_downstream_reconstruction_metrics`);
    - CE: the model's own per-token next-token loss (`loss_per_token=True`: position t
      predicts token t + 1, so T - 1 values per context), kept where the mask of the INPUT
      token t is True (`mask[:, :-1]`); clean, SAE and ablation CE alike;
    - each mean is over all kept tokens of all batches pooled (`torch.cat(...).mean()`): a
      ratio of sums, not a mean of per-batch means; the scores are then formed from means:
      kl_div_with_sae, kl_div_with_ablation: mean KL with the SAE / with the ablation;
      kl_div_score = (kl_div_with_ablation - kl_div_with_sae) / kl_div_with_ablation;
      ce_loss_without_sae, ce_loss_with_sae, ce_loss_with_ablation: mean CE (clean, SAE,
        ablation);
      ce_loss_score = (ce_loss_with_ablation - ce_loss_with_sae)
        / (ce_loss_with_ablation - ce_loss_without_sae).
    `l2_ratio` (`SAEBenchMetrics`; sae_lens: `get_sparsity_and_variance_metrics`, no splice:
    the SAE applied to the cached activation of every position) is the mean over the masked
    tokens, pooled over batches, of the per-token ratio ||x_hat|| / ||x|| (a mean of ratios;
    an input norm below 1e-4 is replaced by 1).
    Positions that nsae does not harvest (`data.exclude_special_tokens=true`) have no
    reconstruction and keep their original activation in both forwards.
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
        logits_recon_sb_BTV: Tensor | None = None,
    ) -> None:
        """`mask_BT` (bool [B, T]): the positions the SAEBench metrics count; None counts
        every position. nsae's own metrics always count every predicted position.
        `logits_recon_sb_BTV`: SAEBench's SAE forward (the original activation kept outside
        the mask); None when it is the forward of `logits_recon_BTV`."""
        logp_clean = clean_log_probs(logits_clean_BTV)
        recon, zero = (
            token_terms(logp_clean, x, ids_BT) for x in (logits_recon_BTV, logits_zero_BTV)
        )
        recon_sb = None
        if logits_recon_sb_BTV is not None:
            recon_sb = token_terms(logp_clean, logits_recon_sb_BTV, ids_BT)
        self.update(layer_index, ids_BT, logp_clean, recon, zero, mask_BT, recon_sb)

    def update(
        self,
        layer_index: int,
        ids_BT: Tensor,
        logp_clean_BTV: Tensor,
        recon: tuple[Tensor, Tensor],
        zero: tuple[Tensor, Tensor],
        mask_BT: Tensor | None = None,
        recon_sb: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """One layer's batch, from `clean_log_probs` of the clean logits and the (kl [B, T],
        ce [B, T - 1]) `token_terms` of the reconstruction (spliced at every position), of
        the zero ablation (these depend on no SAE, so a sweep computes them once:
        `nsae.data.fixed`) and of SAEBench's reconstruction (`recon_sb`: spliced only where
        `mask_BT` is True; None when no position outside the mask was spliced, so that it
        equals `recon`)."""
        device = logp_clean_BTV.device
        targets = ids_BT[:, 1:].to(device)
        recon_sb = recon if recon_sb is None else recon_sb
        ce_BT = {
            "clean": -logp_clean_BTV[:, :-1].gather(-1, targets[..., None]).squeeze(-1),
            "recon": recon[1].to(device),
            "zero": zero[1].to(device),
            "sae": recon_sb[1].to(device),
        }
        kl_BT = {
            "recon": recon[0].to(device),
            "zero": zero[0].to(device),
            "sae": recon_sb[0].to(device),
        }
        if mask_BT is None:
            mask_BT = torch.ones_like(ids_BT, dtype=torch.bool)
        m_BT = mask_BT.to(device).double()
        m_ce = m_BT[:, :-1]
        # per-token values in float32, summed over tokens in float64
        sums = {f"ce_{k}": ce_BT[k].double().sum() for k in ("clean", "recon", "zero")}
        sums["kl"] = kl_BT["recon"][:, :-1].double().sum()
        sums["n"] = torch.tensor(float(targets.numel()), dtype=torch.float64)
        sums["sb_kl_sae"] = (kl_BT["sae"].double() * m_BT).sum()
        sums["sb_kl_zero"] = (kl_BT["zero"].double() * m_BT).sum()
        sums["sb_n_kl"] = m_BT.sum()
        for name in ("clean", "sae", "zero"):
            sums[f"sb_ce_{name}"] = (ce_BT[name].double() * m_ce).sum()
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


class CleanDist(NamedTuple):
    """A batch's clean next-token distribution, computed once for all of its layers'
    splices: log P and P, each [B, T, V]."""

    logp_BTV: Tensor
    p_BTV: Tensor


def clean_dist(logp_clean_BTV: Tensor) -> CleanDist:
    return CleanDist(logp_clean_BTV, logp_clean_BTV.exp())


def token_terms(
    clean: Tensor | CleanDist, logits_BTV: Tensor, ids_BT: Tensor
) -> tuple[Tensor, Tensor]:
    """Per token, for logits with one layer changed: (KL(P_clean || P) [B, T], next-token
    cross-entropy [B, T - 1] at the predicting positions), float32. `clean`: the clean
    log-probabilities, or their `clean_dist` (faster over many splices of one batch: P is
    computed once; the same numbers)."""
    if not isinstance(clean, CleanDist):
        clean = clean_dist(clean)
    logp_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    kl_BT = (clean.p_BTV * (clean.logp_BTV - logp_BTV)).sum(-1)
    targets = ids_BT[:, 1:].to(logp_BTV.device)
    ce_BT = -logp_BTV[:, :-1].gather(-1, targets[..., None]).squeeze(-1)
    return kl_BT, ce_BT
