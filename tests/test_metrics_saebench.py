"""SAEBench-compatible metrics against independent numpy computations of its formulas."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor

from nsae.evaluation import Evaluator, spliced
from nsae.metrics import SpliceMetrics, saebench_mask
from nsae.metrics.splice import clean_log_probs, token_terms
from nsae.saes import build_sae

BOS, EOS, PAD = 0, 3, None  # a tokenizer without a pad token


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_saebench(ids: np.ndarray, clean: np.ndarray, recon: np.ndarray, zero: np.ndarray):
    """SAEBench's core eval: mask = input token not BOS/EOS/pad; KL per position (all T),
    CE per predicting position (T - 1, mask[:, :-1]); means over the masked positions.
    `recon`: the logits of SAEBench's SAE forward (original activation kept off the mask)."""
    mask = (ids != BOS) & (ids != EOS)
    logits = {"c": clean, "r": recon, "z": zero}
    lp = {k: np_log_softmax(v.astype(np.float64)) for k, v in logits.items()}
    kl = {k: (np.exp(lp["c"]) * (lp["c"] - lp[k])).sum(-1)[mask].mean() for k in "rz"}
    tgt = ids[:, 1:]
    ce = {
        k: -np.take_along_axis(v[:, :-1], tgt[..., None], -1)[..., 0][mask[:, :-1]].mean()
        for k, v in lp.items()
    }
    return {
        "kl_div_with_sae": kl["r"],
        "kl_div_with_ablation": kl["z"],
        "kl_div_score": (kl["z"] - kl["r"]) / kl["z"],
        "ce_loss_without_sae": ce["c"],
        "ce_loss_with_sae": ce["r"],
        "ce_loss_with_ablation": ce["z"],
        "ce_loss_score": (ce["z"] - ce["r"]) / (ce["z"] - ce["c"]),
    }


def test_saebench_mask_drops_bos_eos_pad() -> None:
    ids = torch.tensor([[0, 5, 3, 0, 7]])
    assert saebench_mask(ids, [BOS, EOS, PAD]).tolist() == [[False, True, False, False, True]]


def test_splice_saebench_metrics_match_numpy() -> None:
    """SAEBench's metrics come from their own SAE forward (`logits_recon_sb_BTV`), nsae's
    from the forward spliced at every position; the zero ablation is shared."""
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[BOS, 1, 2, EOS, 1, 2, 1], [BOS, 2, 2, 1, EOS, BOS, 1]])
    logits = torch.randn(4, 2, 7, 5, generator=g) * 2  # clean, recon, zero, SAEBench recon
    logits[2] = logits[2] * 0.1  # the ablation is far from clean
    m, every = SpliceMetrics(3), SpliceMetrics(3)
    mask = saebench_mask(ids, [BOS, EOS, PAD])
    # two batches of one context each, into layer 2: the sums add up
    for b in range(2):
        clean, recon, zero, recon_sb = (lg[b : b + 1] for lg in logits)
        one = ids[b : b + 1]
        m.update_from_logits(2, one, clean, recon, zero, mask[b : b + 1], recon_sb)
        every.update_from_logits(2, one, clean, recon, zero, mask[b : b + 1])
    got = {k: v[2].item() for k, v in m.compute().items()}
    ref = np_saebench(ids.numpy(), *(lg.numpy() for lg in logits[[0, 3, 2]]))
    for name, value in ref.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name
    # without a SAEBench forward, its metrics read the spliced-everywhere one; nsae's own
    # metrics never read the SAEBench forward
    ref_every = np_saebench(ids.numpy(), *(lg.numpy() for lg in logits[:3]))
    got_every = {k: v[2].item() for k, v in every.compute().items()}
    for name, value in ref_every.items():
        assert got_every[name] == pytest.approx(value, rel=1e-5), name
    for name in ("kl", "ce_recon", "reconstruction_score"):
        assert got[name] == got_every[name], name
    assert got["kl_div_with_sae"] != pytest.approx(got_every["kl_div_with_sae"], rel=1e-3)


def test_spliced_keeps_the_original_activation_off_the_given_positions() -> None:
    a_BTD = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    where_BT = torch.tensor([[False, True, True], [True, False, True]])
    x_hat_ND = -torch.arange(1, 9, dtype=torch.float32).reshape(4, 2)
    out_BTD = spliced(x_hat_ND, where_BT)(a_BTD)
    torch.testing.assert_close(out_BTD[where_BT], x_hat_ND)
    torch.testing.assert_close(out_BTD[~where_BT], a_BTD[~where_BT])
    assert a_BTD.min() == 0  # the model's own activation is not written to


class ToyDM:
    """What `Evaluator._update_lm` reads from the activation source, around a toy causal
    "LM" of two layers: a given activation a_BTD, changed by a hook `fn` at layer j, mixed causally
    (cumulative mean over positions) and projected onto V logits."""

    def __init__(self, ids_BT: Tensor, keep_BT: Tensor, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        B, T = ids_BT.shape
        self.ids_BT, self.keep_BT = ids_BT, keep_BT
        self.a_BTLD = torch.randn(B, T, 2, 4, generator=g)
        self.W_DV = torch.randn(4, 6, generator=g)
        self.tokenizer = SimpleNamespace(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
        self.harvester = SimpleNamespace(logits=self.logits, layers=[0, 1])
        self.hooks: list[Tensor] = []  # each hooked forward's activation at its layer

    def logits(self, ids_BT: Tensor, j: int | None = None, fn=None) -> Tensor:
        a_BTLD = self.a_BTLD.clone()
        if fn is not None:
            a_BTLD[:, :, j] = fn(a_BTLD[:, :, j])
            self.hooks.append(a_BTLD[:, :, j])
        T = a_BTLD.shape[1]
        mixed_BTD = a_BTLD.sum(2).cumsum(1) / torch.arange(1, T + 1)[None, :, None]
        return mixed_BTD @ self.W_DV

    def eval_batch(self, index_B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.ids_BT, self.a_BTLD[self.keep_BT], self.keep_BT

    def stored_extra(self, name: str, index_B: Tensor) -> None:
        return None  # no stored fixed inputs: the zero ablation is a forward here


@pytest.mark.parametrize("case", ["special", "no_special", "special_not_harvested"])
def test_evaluator_splices_saebench_only_on_its_mask_and_only_when_needed(case: str) -> None:
    """A batch with BOS/EOS positions: nsae's forward splices every harvested position, a
    second (SAEBench's) keeps the original activation at BOS/EOS, and SAEBench's metrics
    equal a direct computation from that forward. Without special positions, or when they
    are not harvested (`data.exclude_special_tokens`): one spliced forward per layer, which
    SAEBench's metrics read."""
    ids_BT = torch.tensor([[BOS, 1, 2, EOS, 1], [BOS, 2, 1, 1, 2]])
    if case == "no_special":
        ids_BT[ids_BT == BOS], ids_BT[ids_BT == EOS] = 4, 5
    keep_BT = torch.ones_like(ids_BT, dtype=torch.bool)
    if case == "special_not_harvested":
        keep_BT = saebench_mask(ids_BT, [BOS, EOS, PAD])
    special = case == "special"
    dm = ToyDM(ids_BT, keep_BT)
    torch.manual_seed(0)
    sae = build_sae("none", 2, 4, 8).eval()
    ev = Evaluator(sae, ["l0"])
    with torch.no_grad():
        ev._update_lm(dm, torch.arange(2), True, lambda index_B, compute: compute())
        x_hat_NLD = sae(dm.a_BTLD[keep_BT])[0]
    out, hooks = ev.splice.compute(), list(dm.hooks)
    mask_BT = saebench_mask(ids_BT, [BOS, EOS, PAD])
    per_layer = 3 if special else 2  # nsae's splice, [SAEBench's,] the zero ablation
    assert len(hooks) == 2 * per_layer
    logp_clean = clean_log_probs(dm.logits(ids_BT))
    for j in range(2):
        recon_BTD, sb_BTD = hooks[per_layer * j], hooks[per_layer * j + per_layer - 2]
        torch.testing.assert_close(recon_BTD[keep_BT], x_hat_NLD[:, j])
        torch.testing.assert_close(recon_BTD[~keep_BT], dm.a_BTLD[:, :, j][~keep_BT])
        torch.testing.assert_close(sb_BTD[mask_BT], x_hat_NLD[mask_BT[keep_BT], j])
        torch.testing.assert_close(sb_BTD[~mask_BT], dm.a_BTLD[:, :, j][~mask_BT])
        # SAEBench's means, from forwards computed here
        kl_sb = token_terms(logp_clean, dm.logits(ids_BT, j, lambda a, s=sb_BTD: s), ids_BT)[0]
        kl_zero = token_terms(logp_clean, dm.logits(ids_BT, j, torch.zeros_like), ids_BT)[0]
        assert out["kl_div_with_sae"][j].item() == pytest.approx(kl_sb[mask_BT].mean().item())
        assert out["kl_div_with_ablation"][j].item() == pytest.approx(
            kl_zero[mask_BT].mean().item()
        )
