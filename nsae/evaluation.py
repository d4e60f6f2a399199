"""Validation and final evaluation of the SAE bank (noise off): every evaluation metric,
updated from held-out batches and computed (then reset) once per evaluation.

An LM source's batch is indices of held-out contexts: the activation source gives their
tokens and activations (`LMActivations.eval_batch`: stored once per sweep, or harvested),
and for the final evaluation each layer's reconstruction is spliced back into the source's
LM (the zero ablation's terms are stored with the fixed inputs, `zero_ablation`, or computed
here): at every harvested position for nsae's own metrics,
and, for SAEBench's (`SpliceMetrics`), only at positions whose token is not BOS, EOS or pad,
the original activation kept at those (a second forward, run only for a batch that has one).
A synthetic source's batch is an index into its fixed evaluation stream, which also carries
the true features for the ground-truth metrics (no splice: no LM reads those activations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from nsae.data.activations import eval_positions
from nsae.metrics import (
    FeatureDensity,
    NormBinnedMetrics,
    SAEBenchMetrics,
    SAEMetrics,
    SpliceMetrics,
    saebench_mask,
)
from nsae.metrics.ground_truth import NO_OUTLIERS, TOKEN_METRICS, GroundTruthMetrics
from nsae.metrics.splice import CleanDist, clean_dist, clean_log_probs, token_terms


class Evaluator(nn.Module):
    """The evaluation metrics of one SAE bank (a submodule of the LightningModule, so its
    states move with it and sync across ranks)."""

    def __init__(self, sae: Any, names: list[str]) -> None:
        super().__init__()
        L_, D, M = sae.n_layers, sae.d_model, sae.n_features
        self.sae = [sae]  # a reference, not a submodule (the LightningModule owns the SAE)
        self.metrics = SAEMetrics(names, L_, D, M)
        self.splice = SpliceMetrics(L_)
        self.density = FeatureDensity(L_, D, M)  # firing frequency over the evaluation set
        self.saebench = SAEBenchMetrics(L_, M)  # l2_ratio, frac_alive (SAEBench's mask)
        # per input-norm decile and position 0; the edges come from the norm sample
        self.binned = NormBinnedMetrics(L_, torch.zeros(L_, 9))
        self.ground_truth: GroundTruthMetrics | None = None  # synthetic sources only
        # ... and again without the tokens that carry massive directions (if the source has them)
        self.ground_truth_typical: GroundTruthMetrics | None = None
        self.sections: dict[str, Any] = {}  # metrics.json's binned sections, last evaluation

    def prepare(self, dm: Any, layers: list[int]) -> None:
        """Decile edges from the datamodule's norm statistics (every stage; never stored),
        and the ground-truth metrics for a synthetic source."""
        edges_L9 = torch.tensor([dm.norm_stats[f"layer_{i}"]["decile_edges"] for i in layers])
        self.binned.set_edges(edges_L9)
        synthetic = getattr(dm, "synthetic", None)
        if synthetic is not None and self.ground_truth is None:
            W = self.sae[0].W_dec_LMD
            truth_LFD = synthetic.dict_LFD
            self.ground_truth = GroundTruthMetrics(truth_LFD, W.shape[1], edges_L9).to(W.device)
            if synthetic.massive.on:
                typical = GroundTruthMetrics(truth_LFD, W.shape[1], edges_L9)
                self.ground_truth_typical = typical.to(W.device)

    def start(self) -> None:
        if self.ground_truth is not None:  # decoder-only matching, once per evaluation
            self.ground_truth.set_decoder(self.sae[0].W_dec_LMD.detach())
            if self.ground_truth_typical is not None:  # the same decoder: its matches too
                self.ground_truth_typical.copy_decoder(self.ground_truth)

    def update(self, dm: Any, batch: Tensor, splice: bool) -> None:
        """One evaluation batch of the datamodule `dm`'s activation source (`dm.acts`)."""
        if dm.acts.synthetic is not None:
            self._update_synthetic(dm.acts.synthetic, batch, dm.data.batch_size)
        else:
            self._update_lm(dm.acts, batch, splice, dm.clean_log_probs)

    def _update_synthetic(self, synthetic: Any, index: Tensor, batch_tokens: int) -> None:
        truth = synthetic.eval_batch(int(index), batch_tokens)
        x_hat_NLD, f_NLM = self.sae[0](truth.x_NLD)
        b = self.metrics.update(truth.x_NLD, x_hat_NLD, f_NLM)
        self.density.update(b)
        self.saebench.update(b, torch.ones(len(truth.x_NLD), dtype=torch.bool))
        self.binned.update(b, torch.zeros(len(truth.x_NLD), dtype=torch.bool))
        assert self.ground_truth is not None
        self.ground_truth.update(truth.x_NLD, x_hat_NLD, f_NLM, truth.f_NLF)
        if self.ground_truth_typical is not None and truth.massive_N is not None:
            keep_N = ~truth.massive_N.to(truth.x_NLD.device)
            tensors = (truth.x_NLD, x_hat_NLD, f_NLM, truth.f_NLF)
            self.ground_truth_typical.update(*(t[keep_N] for t in tensors))

    def _update_lm(self, acts: Any, index_B: Tensor, splice: bool, shared: Callable) -> None:
        """shared(index_B, compute): the clean log-probabilities, computed once per cohort."""
        ids_BT, x_NLD, keep_BT = acts.eval_batch(index_B)
        x_hat_NLD, f_NLM = self.sae[0](x_NLD)
        b = self.metrics.update(x_NLD, x_hat_NLD, f_NLM)
        self.density.update(b)
        tok = acts.tokenizer  # SAEBench counts no BOS, EOS or pad position
        mask_BT = saebench_mask(ids_BT, (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id))
        self.saebench.update(b, mask_BT[keep_BT])
        self.binned.update(b, eval_positions(keep_BT) == 0)
        if not splice:
            return
        lm = acts.harvester
        logp_clean = shared(index_B, lambda: clean_log_probs(lm.logits(ids_BT)))
        clean = clean_dist(logp_clean)  # P once for every layer's splice
        # SAEBench splices only at its mask's positions (the original activation is kept at
        # BOS/EOS/pad): a second forward, needed only if a spliced position is outside it
        sb_N = mask_BT[keep_BT]  # which harvested tokens SAEBench splices
        sb_BT = None if bool(sb_N.all()) else keep_BT & mask_BT
        for j in range(x_NLD.shape[1]):
            recon = token_terms(
                clean, lm.logits(ids_BT, j, spliced(x_hat_NLD[:, j], keep_BT)), ids_BT
            )
            recon_sb = None
            if sb_BT is not None:
                logits_sb_BTV = lm.logits(ids_BT, j, spliced(x_hat_NLD[sb_N, j], sb_BT))
                recon_sb = token_terms(clean, logits_sb_BTV, ids_BT)
            zero = zero_terms(acts, index_B, ids_BT, j, clean)
            self.splice.update(j, ids_BT, logp_clean, recon, zero, mask_BT, recon_sb)

    def finish(self, layers: list[int]) -> tuple[dict[str, Tensor], Tensor]:
        """({metric: [L]}, density [L, M]) of this evaluation; every metric reset."""
        values = self.metrics.compute() | self.saebench.compute()
        values["l0_norm_slope"] = self.binned.compute()["l0_norm_slope"]
        if self.splice.update_count:
            values |= self.splice.compute()
        density_LM = self.density.compute()
        self.sections = self.binned.to_json(layers)
        if self.ground_truth is not None and self.ground_truth.update_count:
            values |= self.ground_truth.compute()
            self.sections["ground_truth_by_norm_decile"] = self.ground_truth.to_json(layers)
            self.ground_truth.reset()
        typical = self.ground_truth_typical
        if typical is not None and typical.update_count:  # token metrics, outliers excluded
            found = typical.compute()
            values |= {f"{k}{NO_OUTLIERS}": found[k] for k in TOKEN_METRICS}
            self.sections[f"ground_truth_by_norm_decile{NO_OUTLIERS}"] = typical.to_json(layers)
            typical.reset()
        for metric in (self.metrics, self.splice, self.density, self.saebench, self.binned):
            metric.reset()
        return values, density_LM


def spliced(x_hat_ND: Tensor, where_BT: Tensor) -> Callable[[Tensor], Tensor]:
    """The hook function that puts the reconstructions `x_hat_ND` (one row per True of
    `where_BT`, in order) into a layer's activation [B, T, D], and keeps the original
    activation at every other position."""

    def splice(a_BTD: Tensor) -> Tensor:
        out_BTD = a_BTD.clone()
        out_BTD[where_BT] = x_hat_ND.to(a_BTD.dtype)
        return out_BTD

    return splice


def ablate(lm: Any, ids_BT: Tensor, j: int, clean: Tensor | CleanDist) -> tuple[Tensor, Tensor]:
    """`token_terms` of a forward with layer j's activation zeroed at every position (BOS,
    EOS and pad included: SAEBench's ablation too)."""
    return token_terms(clean, lm.logits(ids_BT, j, torch.zeros_like), ids_BT)


def zero_ablation(lm: Any, ids_BT: Tensor) -> dict[str, Tensor]:
    """Each layer's zero-ablation terms of a batch of contexts, stored with the fixed inputs
    (`LMActivations`' fixed_extras): kl [L, B, T] and ce [L, B, T - 1]."""
    clean = clean_dist(clean_log_probs(lm.logits(ids_BT)))
    terms = [ablate(lm, ids_BT, j, clean) for j in range(len(lm.layers))]
    return {
        "zero_kl_LCT": torch.stack([t[0] for t in terms]).cpu(),
        "zero_ce_LCT": torch.stack([t[1] for t in terms]).cpu(),
    }


def zero_terms(
    acts: Any, index_B: Tensor, ids_BT: Tensor, j: int, clean: Tensor | CleanDist
) -> tuple[Tensor, Tensor]:
    """Layer j's zero-ablation (kl [B, T], ce [B, T - 1]) of an evaluation batch: stored,
    or from a forward with that layer zeroed."""
    kl_LBT = acts.stored_extra("zero_kl_LCT", index_B)
    ce_LBT = acts.stored_extra("zero_ce_LCT", index_B)
    if kl_LBT is not None and ce_LBT is not None:
        return kl_LBT[j], ce_LBT[j]
    return ablate(acts.harvester, ids_BT, j, clean)
