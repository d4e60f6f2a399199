"""Ground-truth metrics (nsae.metrics.ground_truth): agreement with SAELens' own evaluation,
known answers (the true dictionary, a random one, a trained SAE), and the norm deciles."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from nsae.data.synthetic import SyntheticBatch, SyntheticSource
from nsae.errors import NsaeError
from nsae.loss import SAELoss
from nsae.metrics.binned import decile_edges
from nsae.metrics.ground_truth import (
    NAMES,
    GroundTruthMetrics,
    abs_cosine,
    mcc_and_uniqueness,
    random_directions,
)
from nsae.saes import SAE, build_sae
from tests.test_synthetic import one_thread, source, tiny_cfg  # noqa: F401 (a fixture)

pytest.importorskip("sae_lens")


def easy_source(layers: tuple[int, ...] = (0, 2), **premise: object) -> SyntheticSource:
    """16 features in 32 dimensions (no superposition), each firing 10% of the time."""
    cfg = tiny_cfg(**premise)
    cfg["model"] = {
        "num_features": 16,
        "hidden_dim": 32,
        "firing_probability": {"generator_name": "constant", "probability": 0.1},
        "std_firing_magnitudes": 0.2,
        "mean_firing_magnitudes": 1.0,
        "bias": 0.5,
        "seed": 0,
    }
    return SyntheticSource(cfg, list(layers), 0, "cpu")


def evaluate(
    sae: SAE,
    src: SyntheticSource,
    batches: list[SyntheticBatch],
    edges_L9: torch.Tensor | None = None,
) -> GroundTruthMetrics:
    metric = GroundTruthMetrics(src.dict_LFD, sae.n_features, edges_L9)
    metric.set_decoder(sae.W_dec_LMD.detach())
    sae.eval()
    for b in batches:
        with torch.no_grad():
            x_hat_NLD, f_NLM = sae(b.x_NLD)
        metric.update(b.x_NLD, x_hat_NLD, f_NLM, b.f_NLF)
    return metric


def random_sae(d: int, m: int, n_layers: int = 2, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    sae = build_sae("none", n_layers, d, m)
    with torch.no_grad():
        sae.b_enc_LM.fill_(-0.05)
    return sae


def true_sae(src: SyntheticSource) -> SAE:
    """Decoder = the true dictionary, encoder = its pseudo-inverse, b_dec = the layer's bias:
    with fewer features than dimensions the features come back exactly."""
    L, F, D = src.dict_LFD.shape
    sae = build_sae("none", L, D, F)
    with torch.no_grad():
        sae.W_dec_LMD.copy_(src.dict_LFD)
        sae.W_enc_LDM.copy_(torch.linalg.pinv(src.dict_LFD.double()).float())
        sae.b_dec_LD.copy_(src.bias_LD * src.layer_scale_L[:, None])
        sae.b_enc_LM.fill_(-1e-3)
    return sae


class Replay:
    """Feeds eval_sae_on_synthetic_data the very feature activations nsae evaluated."""

    def __init__(self, g_list: list[torch.Tensor]) -> None:
        self.g_list = list(g_list)

    def sample(self, n: int) -> torch.Tensor:
        g = self.g_list.pop(0)
        assert len(g) == n
        return g


def test_agrees_with_saelens_eval_sae_on_synthetic_data(tmp_path: Path) -> None:
    """Premise off: the same SAE (exported, loaded in SAELens) on the same tokens."""
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    import nsae.saelens
    from nsae.export import export_saes

    src = source()
    sae = random_sae(32, 48)
    batches = src.eval_batches(1024, 256)
    ours = evaluate(sae, src, batches).compute()
    meta = {"model_name": "synthetic", "hook_site": "resid_post", "context_size": 1}
    export_saes(sae, src.layers, torch.ones(2, 48), tmp_path, meta)
    for j, layer in enumerate(src.layers):
        lens_sae = nsae.saelens.load(str(tmp_path / f"layer_{layer}"))
        feed = Replay([b.f_NLF[:, j] for b in batches])
        ref = eval_sae_on_synthetic_data(
            lens_sae, src.models[j].feature_dict, feed, num_samples=1024, batch_size=256
        )
        expect = {
            "mcc": ref.mcc,
            "uniqueness": ref.uniqueness,
            "precision": ref.classification.precision,
            "recall": ref.classification.recall,
            "f1": ref.classification.f1_score,
            "shrinkage": ref.shrinkage,
            "true_l0": ref.true_l0,
            "excess_l0": ref.sae_l0 - ref.true_l0,
        }
        assert 0 < ref.classification.precision < 1 and 0 < ref.mcc < 1  # not a trivial case
        for name, value in expect.items():
            assert ours[name][j].item() == pytest.approx(value, abs=1e-4), name


@pytest.mark.parametrize("premise", [{}, {"kind": "mixture", "sigma": 0.5, "outlier_frac": 0.05,
                                          "outlier_scale": 30.0, "layer_growth": 2.0}])  # fmt: skip
def test_the_true_dictionary_scores_perfectly_in_every_decile(premise: dict) -> None:
    src = easy_source(**premise)
    sae = true_sae(src)
    edges_L9 = decile_edges(src.norm_sample(2048).norm(dim=-1))
    metric = evaluate(sae, src, src.eval_batches(2048, 512), edges_L9)
    values = metric.compute()
    one = torch.ones(2, dtype=torch.float64)
    for name in ("mcc", "uniqueness", "precision", "recall", "f1"):
        torch.testing.assert_close(values[name], one, atol=1e-6, rtol=0)
    torch.testing.assert_close(values["shrinkage"], one, atol=3e-3, rtol=0)  # b_enc = -1e-3
    torch.testing.assert_close(values["excess_l0"], torch.zeros(2, dtype=torch.float64))
    deciles = metric.compute_by_decile()
    assert deciles["count"].sum(1).tolist() == [2048.0, 2048.0]
    # (flat: the ~19% of tokens with no feature all have ||x|| = ||b||, one tied decile)
    assert ((deciles["count"] > 100).sum(1) >= 9).all()
    filled = deciles["count"] > 0
    assert deciles["excess_l0"][filled].abs().max() == 0


def test_a_random_decoder_scores_like_random_vectors() -> None:
    """Its mcc is what Gaussian random directions score against the same dictionary."""
    src = source(layers=(0,))
    sae = random_sae(32, 64, n_layers=1)
    values = evaluate(sae, src, src.eval_batches(512, 512)).compute()
    gen = torch.Generator().manual_seed(1)
    reference = [
        mcc_and_uniqueness(abs_cosine(torch.randn(64, 32, generator=gen), src.dict_LFD[0]))[0]
        for _ in range(5)
    ]
    assert values["mcc"].item() == pytest.approx(float(np.mean(reference)), abs=0.03)
    assert values["mcc"].item() < 0.5
    # mcc_random: fixed Gaussian directions' mcc, like other random directions' (and not 1:
    # sae_lens draws its truth with randn under the model's seed, so seed-0 randn would be it)
    expected = mcc_and_uniqueness(abs_cosine(random_directions(64, 32), src.dict_LFD[0]))[0]
    assert values["mcc_random"].item() == pytest.approx(expected, abs=1e-12)
    assert values["mcc_random"].item() == pytest.approx(float(np.mean(reference)), abs=0.03)


def test_decile_metrics_match_a_hand_computation() -> None:
    src = source(kind="lognormal", sigma=1.0, layer_growth=2.0)
    sae = random_sae(32, 48)
    edges_L9 = decile_edges(src.norm_sample(1024).norm(dim=-1))
    batches = src.eval_batches(1024, 512)
    deciles = evaluate(sae, src, batches, edges_L9).compute_by_decile()
    x = torch.cat([b.x_NLD for b in batches]).numpy()
    g = torch.cat([b.f_NLF for b in batches]).numpy()
    with torch.no_grad():
        x_hat, f = (t.numpy() for t in sae(torch.from_numpy(x)))
    for j in range(2):
        norm = np.linalg.norm(x[:, j].astype(np.float64), axis=-1)
        bins = np.searchsorted(edges_L9[j].numpy(), norm, side="right")
        excess = (f[:, j] != 0).sum(-1) - (g[:, j] != 0).sum(-1)
        shrink = np.linalg.norm(x_hat[:, j], axis=-1) / norm
        for k in range(10):
            sel = bins == k
            assert deciles["count"][j, k] == sel.sum()
            assert deciles["excess_l0"][j, k].item() == pytest.approx(excess[sel].mean(), abs=1e-9)
            assert deciles["shrinkage"][j, k].item() == pytest.approx(shrink[sel].mean(), abs=1e-5)


def test_two_ranks_shares_summed_equal_one_rank() -> None:
    """What DDP does to the states (a sum over ranks) gives the 1-rank values exactly."""
    src = source(kind="lognormal", sigma=1.0)
    sae = random_sae(32, 48)
    edges_L9 = decile_edges(src.norm_sample(1024).norm(dim=-1))
    whole = evaluate(sae, src, src.eval_batches(1024, 256), edges_L9)
    shards = [evaluate(sae, src, src.eval_batches(1024, 256, r, 2), edges_L9) for r in (0, 1)]
    shards[0].merge_state(shards[1])
    for got, expect in ((shards[0].compute(), whole.compute()),
                        (shards[0].compute_by_decile(), whole.compute_by_decile())):  # fmt: skip
        for name in expect:
            torch.testing.assert_close(got[name], expect[name], rtol=1e-12, atol=1e-12)


def test_bad_use_stops_with_one_line() -> None:
    src = source()
    metric = GroundTruthMetrics(src.dict_LFD, 8)
    x = torch.zeros(4, 2, 32)
    with pytest.raises(NsaeError, match="before set_decoder"):
        metric.update(x, x, torch.zeros(4, 2, 8), torch.zeros(4, 2, 64))
    with pytest.raises(NsaeError, match="without norm decile edges"):
        metric.compute_by_decile()
    with pytest.raises(NsaeError, match=r"expected non-decreasing \[n_layers, 9\] = \[2, 9\]"):
        GroundTruthMetrics(src.dict_LFD, 8, torch.zeros(3, 9))


def test_a_standard_sae_trained_on_an_easy_model_recovers_the_features() -> None:
    """The easy model, flat norms: 300 Adam steps of nsae's standard SAE and loss (b_dec
    started at the mean) reach mcc >= 0.9."""
    src = easy_source(layers=(0,))
    torch.manual_seed(0)
    sae = build_sae("none", 1, 32, 32)
    sae.init_b_dec(src.norm_sample(2048))
    loss_fn = SAELoss("none", torch.tensor([0.2]))
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    for x_BLD in itertools.islice(src.train_chunks(256), 300):
        parts = loss_fn(x_BLD, sae.train_forward(x_BLD))
        opt.zero_grad()
        parts.total.backward()
        sae.before_optimizer_step()
        opt.step()
        sae.after_optimizer_step()
    values = evaluate(sae, src, src.eval_batches(2048, 1024)).compute()
    assert set(values) == set(NAMES)
    assert values["mcc"].item() >= 0.9
    assert values["recall"].item() > 0.8


def test_random_directions_are_not_a_seed_0_truth() -> None:
    """sae_lens draws a model's true dictionary with torch.randn under its seed; the random
    baseline must not reproduce the usual seed-0 dictionary (it once scored mcc 1.0)."""
    truth_FD = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    mcc, _ = mcc_and_uniqueness(abs_cosine(random_directions(256, 64), truth_FD))
    assert mcc < 0.5
