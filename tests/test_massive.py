"""The massive-direction premise (`source.massive`, nsae/data/massive.py): the true features,
the massive directions included, reconstruct the activations exactly; the carriers' norms
follow the configured magnitude; the configured fraction and fixed position carry them; and
with the premise off (or absent) the source is bit-for-bit what it was."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from nsae.config import CONF_DIR
from nsae.data.synthetic import SyntheticSource
from nsae.errors import NsaeError
from tests.test_synthetic import tiny_cfg

pytest.importorskip("sae_lens")

N = 8192


def massive_source(seed: int = 1, growth: float = 2.0, **massive) -> SyntheticSource:
    cfg = tiny_cfg(layer_growth=growth)
    cfg["massive"] = {"n_directions": 3, "magnitude": 40.0, "token_frac": 0.05, **massive}
    return SyntheticSource(cfg, [0, 2], seed, "cpu")


def test_the_true_features_with_the_massive_ones_reconstruct_x_exactly() -> None:
    src = massive_source()
    b = src.sample(N, "eval", 0)
    assert src.dict_LFD.shape == (2, 64 + 3, 32) and b.f_NLF.shape == (N, 2, 67)
    expect_NLD = torch.einsum("nlf,lfd->nld", b.f_NLF, src.dict_LFD)
    expect_NLD += src.layer_scale_L[None, :, None] * src.bias_LD
    torch.testing.assert_close(b.x_NLD, expect_NLD, rtol=1e-5, atol=1e-4)
    # the massive rows are unit coordinate vectors, the same coordinates in both layers
    rows_LMD = src.dict_LFD[:, 64:]
    assert torch.equal(rows_LMD.abs().sum(-1), torch.ones(2, 3))
    assert torch.equal(rows_LMD[0], rows_LMD[1])
    # only the carriers have massive activations
    carriers_N = b.massive_N
    assert carriers_N is not None
    assert torch.equal(b.f_NLF[..., 64:].amax((1, 2)) > 0, carriers_N)


def test_carriers_norms_follow_the_magnitude_and_the_fraction_is_the_configured_one() -> None:
    src = massive_source(growth=3.0)
    b = src.sample(N, "eval", 1)
    carriers_N = b.massive_N
    frac = carriers_N.float().mean().item()
    assert frac == pytest.approx(0.05, abs=4 * (0.05 * 0.95 / N) ** 0.5)
    # the massive part's norm is magnitude x the layer's median token norm x s_l ...
    massive_NLD = torch.einsum("nlm,lmd->nld", b.f_NLF[..., 64:], src.dict_LFD[:, 64:])
    part_NL = massive_NLD[carriers_N].norm(dim=-1)
    expect_L = 40.0 * src.typical_L * src.layer_scale_L
    torch.testing.assert_close(part_NL, expect_L.expand_as(part_NL), rtol=1e-5, atol=1e-4)
    # ... where that median is the premise-free one: the other tokens' median norm / s_l
    others_NL = b.x_NLD[~carriers_N].norm(dim=-1) / src.layer_scale_L
    torch.testing.assert_close(others_NL.median(0).values, src.typical_L, rtol=0.05, atol=0)
    # so a carrier's whole norm is about 40x a typical token's in its layer
    ratio_NL = b.x_NLD[carriers_N].norm(dim=-1) / (src.typical_L * src.layer_scale_L)
    assert ratio_NL.min() > 38 and ratio_NL.max() < 42


def test_a_fixed_position_carries_them_on_every_run() -> None:
    b = massive_source(token_frac=0.0, every=128).sample(1024, "train", 0)
    assert torch.equal(b.massive_N.nonzero().flatten(), torch.arange(0, 1024, 128))


def test_without_the_premise_the_source_is_unchanged() -> None:
    """No massive key, n_directions 0: the same tokens, truth and dictionary, bit for bit."""
    plain = SyntheticSource(tiny_cfg(layer_growth=2.0), [0, 2], 1, "cpu")
    cfg = tiny_cfg(layer_growth=2.0)
    cfg["massive"] = {"n_directions": 0, "magnitude": 40.0, "token_frac": 0.5}
    off = SyntheticSource(cfg, [0, 2], 1, "cpu")
    a, b = plain.sample(2048, "train", 3), off.sample(2048, "train", 3)
    assert torch.equal(a.x_NLD, b.x_NLD) and torch.equal(a.f_NLF, b.f_NLF)
    assert torch.equal(plain.dict_LFD, off.dict_LFD) and b.massive_N is None
    assert "massive" not in plain.premise() and "massive" not in off.premise()


def test_bad_settings_are_one_clear_line() -> None:
    with pytest.raises(NsaeError, match=r"source.massive: n_directions=-1, .* valid: "):
        massive_source(n_directions=-1)
    with pytest.raises(NsaeError, match=r"n_directions=40 exceeds d_model=32; valid: 0..32"):
        massive_source(n_directions=40)


def test_the_presets_compose() -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        massive = compose("config", overrides=["source=synthetic_massive"]).source
        lognormal = compose("config", overrides=["source=synthetic_lognormal"]).source
    assert (massive.name, massive.token_norm.kind, massive.massive.n_directions) == (
        "synthetic_massive", "lognormal", 4)  # fmt: skip
    assert (lognormal.name, lognormal.token_norm.kind) == ("synthetic_lognormal", "lognormal")
    assert lognormal.get("massive") is None
    src = SyntheticSource(massive, [0], 0, "cpu")
    assert src.n_features_true == 1024 + 4
    assert src.premise()["massive"]["dims"] == sorted(src.premise()["massive"]["dims"])


def test_ground_truth_without_the_outlier_tokens_is_computed_on_the_others_only() -> None:
    """The evaluation's `*_no_outliers` metrics equal the ground-truth metrics of the
    non-carrier tokens alone (computed here by hand and by a second instance), and the
    carriers' own true features (the massive ones) leave the true L0 with them."""
    from types import SimpleNamespace

    from nsae.evaluation import Evaluator
    from nsae.metrics.ground_truth import GroundTruthMetrics
    from nsae.saes import build_sae

    src = massive_source()
    torch.manual_seed(0)
    sae = build_sae("none", 2, 32, 64, l1_weighting="none")
    edges = {f"layer_{i}": {"decile_edges": list(range(1, 10))} for i in (0, 2)}
    dm = SimpleNamespace(
        synthetic=src, acts=SimpleNamespace(synthetic=src), norm_stats=edges,
        data=SimpleNamespace(batch_size=2048),
    )  # fmt: skip
    ev = Evaluator(sae, ["l0"])
    ev.prepare(dm, [0, 2])
    ev.start()
    alone = GroundTruthMetrics(src.dict_LFD, 64)
    alone.set_decoder(sae.W_dec_LMD.detach())
    n_true, n_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(3):
            ev.update(dm, torch.tensor(i), splice=False)
            b = src.eval_batch(i, 2048)
            keep = ~b.massive_N
            x_hat, f = sae(b.x_NLD)
            alone.update(b.x_NLD[keep], x_hat[keep], f[keep], b.f_NLF[keep])
            n_true += (b.f_NLF[keep] != 0).sum(-1).double().sum(0)
            n_tokens += int(keep.sum())
    values, _ = ev.finish([0, 2])
    expect = alone.compute()
    for name in ("f1", "precision", "recall", "shrinkage", "true_l0", "excess_l0"):
        torch.testing.assert_close(values[f"{name}_no_outliers"], expect[name])
    torch.testing.assert_close(values["true_l0_no_outliers"], n_true / n_tokens)
    assert (values["true_l0_no_outliers"] < values["true_l0"]).all()
    assert "ground_truth_by_norm_decile_no_outliers" in ev.sections
