"""SAEBench-compatible metrics against independent numpy computations of its formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsae.metrics import Batch, SAEBenchMetrics, SpliceMetrics, saebench_mask

BOS, EOS, PAD = 0, 3, None  # a tokenizer without a pad token


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_saebench(ids: np.ndarray, clean: np.ndarray, recon: np.ndarray, zero: np.ndarray):
    """SAEBench's core eval: mask = input token not BOS/EOS/pad; KL per position (all T),
    CE per predicting position (T - 1, mask[:, :-1]); means over the masked positions."""
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
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[BOS, 1, 2, EOS, 1, 2, 1], [BOS, 2, 2, 1, EOS, BOS, 1]])
    logits = torch.randn(3, 2, 7, 5, generator=g) * 2  # clean, recon, zero; V = 5
    logits[2] = logits[2] * 0.1  # the ablation is far from clean
    m = SpliceMetrics(3)
    mask = saebench_mask(ids, [BOS, EOS, PAD])
    # two batches of one context each, into layer 2: the sums add up
    for b in range(2):
        m.update_from_logits(
            2, ids[b : b + 1], *(lg[b : b + 1] for lg in logits), mask_BT=mask[b : b + 1]
        )
    got = {k: v[2].item() for k, v in m.compute().items()}
    ref = np_saebench(ids.numpy(), *(lg.numpy() for lg in logits))
    for name, value in ref.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name


def test_without_a_mask_saebench_ce_is_nsae_ce_and_kl_adds_the_last_position() -> None:
    """The hand-worked splice example of test_metrics: two predicting positions and a last
    one where clean and recon agree (KL 0) while zero differs."""
    ids = torch.tensor([[0, 1, 0]])
    clean = torch.log(torch.tensor([[[0.2, 0.8], [0.7, 0.3], [0.9, 0.1]]]))
    recon = torch.log(torch.tensor([[[0.4, 0.6], [0.6, 0.4], [0.9, 0.1]]]))
    zero = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]]))
    m = SpliceMetrics(1)
    m.update_from_logits(0, ids, clean, recon, zero)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["ce_loss_score"] == pytest.approx(out["reconstruction_score"])
    assert out["ce_loss_with_sae"] == pytest.approx(out["ce_recon"])
    kl_sae = (
        0.2 * np.log(0.2 / 0.4)
        + 0.8 * np.log(0.8 / 0.6)
        + 0.7 * np.log(0.7 / 0.6)
        + 0.3 * np.log(0.3 / 0.4)
    ) / 3
    kl_zero = (
        0.2 * np.log(0.2 / 0.5)
        + 0.8 * np.log(0.8 / 0.5)
        + 0.7 * np.log(0.7 / 0.5)
        + 0.3 * np.log(0.3 / 0.5)
        + 0.9 * np.log(0.9 / 0.5)
        + 0.1 * np.log(0.1 / 0.5)
    ) / 3
    assert out["kl_div_with_sae"] == pytest.approx(kl_sae)
    assert out["kl"] == pytest.approx(kl_sae * 3 / 2)  # nsae's: the 2 predicting positions
    assert out["kl_div_score"] == pytest.approx((kl_zero - kl_sae) / kl_zero)


def test_l2_ratio_and_frac_alive_match_numpy() -> None:
    g = torch.Generator().manual_seed(1)
    B, L, D, M = 60, 2, 3, 8
    x = torch.randn(B, L, D, generator=g)
    x[5] = 0  # ||x|| < 1e-4: SAEBench divides by 1
    x_hat = 0.8 * x + 0.1 * torch.randn(B, L, D, generator=g)
    f = torch.relu(torch.randn(B, L, M, generator=g) - 1.5)
    keep = torch.rand(B, generator=g) > 0.3
    keep[5] = True
    f[:, :, 0] = 0
    f[~keep, :, 1] = 1.0  # fires only on dropped tokens: dead for SAEBench
    f[keep, :, 1] = 0.0
    m = SAEBenchMetrics(L, M)
    for idx in torch.arange(B).split(17):
        m.update(Batch(x[idx], x_hat[idx], f[idx]), keep[idx])
    got = m.compute()
    xn, xh, fn, k = x.double().numpy(), x_hat.double().numpy(), f.numpy(), keep.numpy()
    norm_in = np.linalg.norm(xn, axis=-1)[k]
    norm_in[norm_in < 1e-4] = 1.0
    ratio = (np.linalg.norm(xh, axis=-1)[k] / norm_in).mean(0)
    density = (fn[k] > 0).mean(0)  # [L, M]
    np.testing.assert_allclose(got["l2_ratio"].numpy(), ratio, rtol=1e-6)
    np.testing.assert_allclose(got["frac_alive"].numpy(), (density > 0).mean(-1), rtol=1e-12)
    assert (got["frac_alive"] <= 6 / 8).all()  # features 0 and 1 are dead
