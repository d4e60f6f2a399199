"""Each metric against an independent numpy computation on fixed tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsae.metrics import (
    METRICS,
    FeatureDensity,
    RecentFiring,
    SAEMetrics,
    SpliceMetrics,
    cross_layer_stats,
    density_histogram,
    per_layer_dict,
)

B, L, D, M = 300, 3, 5, 12


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 4.0, 20.0]).view(1, L, 1)  # layers of very different norms
    x = (torch.randn(B, L, D, generator=g) + 0.5) * scale
    x_hat = 0.8 * x + 0.3 * torch.randn(B, L, D, generator=g) * scale
    f = torch.relu(torch.randn(B, L, M, generator=g) - 0.8)
    f[:, :, 0] = 0  # a dead feature in every layer
    return x, x_hat, f


def numpy_reference(x: np.ndarray, x_hat: np.ndarray, f: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {k: [] for k in METRICS}
    for j in range(x.shape[1]):
        xl, xh, fl = (a[:, j].astype(np.float64) for a in (x, x_hat, f))
        err = ((xh - xl) ** 2).sum(1)
        l0 = (fl > 0).sum(1)
        out["l0"].append(l0.mean())
        out["l1"].append(fl.sum(1).mean())
        out["l1_l0_ratio"].append(fl.sum() / l0.sum())
        out["mse"].append(err.mean())
        fvu = err.sum() / ((xl - xl.mean(0)) ** 2).sum()
        out["fvu"].append(fvu)
        out["explained_variance"].append(1 - fvu)
        cos = (xl * xh).sum(1) / np.linalg.norm(xl, axis=1) / np.linalg.norm(xh, axis=1)
        out["cosine"].append(cos.mean())
        out["feature_suppression"].append(
            np.linalg.norm(xh, axis=1).sum() / np.linalg.norm(xl, axis=1).sum()
        )
        out["relative_reconstruction_bias"].append((xh**2).sum(1).mean() / (xl * xh).sum(1).mean())
        out["norm_l0_corr"].append(np.corrcoef(np.linalg.norm(xl, axis=1), l0)[0, 1])
    return {k: np.array(v) for k, v in out.items()}


def test_every_metric_matches_numpy(batch) -> None:
    x, x_hat, f = batch
    ref = numpy_reference(x.numpy(), x_hat.numpy(), f.numpy())
    metrics = SAEMetrics(list(METRICS), L, D, M)
    metrics.update(x, x_hat, f)
    got = metrics.compute()
    assert set(got) == set(ref)
    for name, value in got.items():
        # Per-token sums over features run in float32 (f is the largest tensor); the
        # accumulation across tokens is float64.
        np.testing.assert_allclose(value.numpy(), ref[name], rtol=1e-6, err_msg=name)


def test_accumulating_batches_equals_one_big_batch(batch) -> None:
    x, x_hat, f = batch
    whole, parts = SAEMetrics(list(METRICS), L, D, M), SAEMetrics(list(METRICS), L, D, M)
    whole.update(x, x_hat, f)
    for idx in torch.arange(B).split(37):
        parts.update(x[idx], x_hat[idx], f[idx])
    for name, value in whole.compute().items():
        torch.testing.assert_close(parts.compute()[name], value, rtol=1e-12, atol=1e-12)


def test_ratio_of_sums_is_not_mean_of_ratios() -> None:
    # Token norms 1 and 10; reconstructions with norm 0.5 and 10:
    # sum||x_hat|| / sum||x|| = 10.5 / 11, while the mean of ratios is (0.5 + 1) / 2 = 0.75.
    x = torch.tensor([[[1.0, 0.0]], [[10.0, 0.0]]])
    x_hat = torch.tensor([[[0.5, 0.0]], [[10.0, 0.0]]])
    m = METRICS["feature_suppression"](1, 2, 1)
    m.update(x, x_hat, torch.zeros(2, 1, 1))
    assert m.compute().item() == pytest.approx(10.5 / 11)


def test_hand_worked_l0_l1_fvu() -> None:
    x = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])  # mean [2, 0]: total variance 1 + 1 = 2
    x_hat = torch.tensor([[[1.0, 1.0]], [[3.0, 0.0]]])  # squared errors 1 and 0
    f = torch.tensor([[[0.5, 0.0, 2.0]], [[0.0, 0.0, 1.0]]])
    got = SAEMetrics(["l0", "l1", "mse", "fvu"], 1, 2, 3)
    got.update(x, x_hat, f)
    values = {k: v.item() for k, v in got.compute().items()}
    assert values == pytest.approx({"l0": 1.5, "l1": 1.75, "mse": 0.5, "fvu": 0.5})


def test_feature_density(batch) -> None:
    x, x_hat, f = batch
    m = FeatureDensity(L, D, M)
    m.update(x, x_hat, f)
    np.testing.assert_allclose(m.compute().numpy(), (f.numpy() > 0).mean(0), rtol=1e-12)


def test_reset_and_state_size_constant(batch) -> None:
    x, x_hat, f = batch
    metrics = SAEMetrics(list(METRICS), L, D, M)

    def state_numel() -> int:
        return sum(getattr(m, s).numel() for m in metrics.metrics.values() for s in m._defaults)

    metrics.update(x, x_hat, f)
    size = state_numel()
    first = metrics.compute()["l0"].clone()
    for _ in range(1000):
        metrics.update(x[:4], x_hat[:4], f[:4])
    assert state_numel() == size
    metrics.reset()
    metrics.update(x, x_hat, f)
    torch.testing.assert_close(metrics.compute()["l0"], first)  # nothing left from before


def test_per_layer_dict_keys_use_model_layer_indices() -> None:
    out = per_layer_dict({"l0": torch.tensor([1.0, 3.0])}, [2, 5])
    assert out == {"l0": {"layer_2": 1.0, "layer_5": 3.0, "mean": 2.0}}


def test_unknown_metric_named() -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        SAEMetrics(["l7"], 1, 2, 2)


def test_dead_fraction_over_recent_window() -> None:
    """Feature 0 fires at step 0 only, feature 1 every step, feature 2 never, feature 3 at
    step 5. After steps 0..9, a window of w steps covers steps 10-w .. 9."""
    m = RecentFiring(1, 1, 4)
    x = torch.zeros(1, 1, 1)
    for step in range(10):
        f = torch.tensor([[[float(step == 0), 1.0, 0.0, float(step == 5)]]])
        m.update(x, x, f)
    assert m.dead_fraction(3).item() == pytest.approx(3 / 4)  # only feature 1 alive
    assert m.dead_fraction(4).item() == pytest.approx(3 / 4)
    assert m.dead_fraction(5).item() == pytest.approx(2 / 4)  # step 5 is inside the window
    assert m.dead_fraction(100).item() == pytest.approx(1 / 4)


def test_splice_metrics_by_hand() -> None:
    """Two positions predict tokens [1, 0] over a vocabulary of 2 (the last position of a
    context predicts nothing). Worked out with natural logs."""
    ids = torch.tensor([[0, 1, 0]])
    clean = torch.log(torch.tensor([[[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]]]))
    recon = torch.log(torch.tensor([[[0.4, 0.6], [0.6, 0.4], [0.5, 0.5]]]))
    zero = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]]))
    m = SpliceMetrics(2)
    m.update_from_logits(1, ids, clean, recon, zero)
    out = {k: v[1].item() for k, v in m.compute().items()}
    ce_clean = -(np.log(0.8) + np.log(0.7)) / 2
    ce_recon = -(np.log(0.6) + np.log(0.6)) / 2
    ce_zero = -np.log(0.5)
    kl = (
        0.2 * np.log(0.2 / 0.4)
        + 0.8 * np.log(0.8 / 0.6)
        + 0.7 * np.log(0.7 / 0.6)
        + 0.3 * np.log(0.3 / 0.4)
    ) / 2
    assert out["ce_clean"] == pytest.approx(ce_clean)
    assert out["ce_recon"] == pytest.approx(ce_recon)
    assert out["kl"] == pytest.approx(kl)
    assert out["reconstruction_score"] == pytest.approx((ce_zero - ce_recon) / (ce_zero - ce_clean))


def test_cross_layer_stats_by_hand() -> None:
    # L0 = [10, 20, 30] (mean 20, population std sqrt(200/3)); norms rise linearly: r = 1.
    out = cross_layer_stats([10.0, 20.0, 30.0], [1.0, 2.0, 3.0])
    assert out["l0_cv"] == pytest.approx(np.sqrt(200 / 3) / 20)
    assert out["norm_l0_corr"] == pytest.approx(1.0)
    assert cross_layer_stats([5.0, 5.0], [1.0, 2.0]) == {"l0_cv": 0.0, "norm_l0_corr": None}


def test_per_layer_dict_nonfinite_is_none() -> None:
    out = per_layer_dict({"r": torch.tensor([0.5, float("nan")])}, [0, 1])
    assert out == {"r": {"layer_0": 0.5, "layer_1": None, "mean": None}}


def test_density_histogram_by_hand() -> None:
    # frequencies 0 (never), 1e-7 (below range: first bin), 0.003 (log -2.52), 0.5 (log -0.3)
    d = torch.tensor([[0.0, 1e-7, 0.003, 0.5]])
    h = density_histogram(d, [3])["layer_3"]
    assert h["never_fired"] == 1 and sum(h["counts"]) == 3
    assert h["counts"][0] == 1  # bin [-6, -5.5)
    assert h["counts"][6] == 1  # bin [-3, -2.5): log10(0.003) = -2.52
    assert h["counts"][11] == 1  # bin [-0.5, 0]


@pytest.mark.parametrize("method", ["none", "input_norm_squared"])
def test_training_metrics_reusing_the_loss_sums_match_numpy(batch, method) -> None:
    """Training updates take ||x_hat - x||^2 and sum|f| per token from the loss."""
    from nsae.loss import SAELoss
    from nsae.saes.base import TrainOutput

    x, x_hat, f = batch
    parts = SAELoss(method, torch.ones(L))(x, TrainOutput(x_hat, f, f.amax(0) > 0))
    metrics = SAEMetrics(list(METRICS), L, D, M)
    metrics.update(x, x_hat, f, sq_err_BL=parts.sq_err_BL, l1_BL=parts.l1_BL)
    ref = numpy_reference(x.numpy(), x_hat.numpy(), f.numpy())
    for name, value in metrics.compute().items():
        np.testing.assert_allclose(value.numpy(), ref[name], rtol=1e-5, err_msg=name)


def test_batch_refuses_an_unknown_known_quantity(batch) -> None:
    from nsae.metrics import Batch

    with pytest.raises(ValueError, match="no per-token quantity 'l2_BL'"):
        Batch(*batch, l2_BL=torch.zeros(B, L))


def test_features_that_fired_include_negative_activations_as_not_firing() -> None:
    from nsae.metrics import Batch

    f = torch.tensor([[[0.0, -1.0, 2.0]], [[0.0, -3.0, 0.0]]])  # [B=2, L=1, M=3]
    b = Batch(torch.zeros(2, 1, 1), torch.zeros(2, 1, 1), f)
    assert b.fired_LM.tolist() == [[False, False, True]]
    assert b.l0_BL.tolist() == [[1.0], [0.0]]
