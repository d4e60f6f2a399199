"""Norm statistics of the norm sample, checked against numpy on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsae.data.norms import mean_norms, norm_statistics


def sample(n_ctx: int = 20, T: int = 16, L: int = 3, D: int = 8, seed: int = 0):
    """Activations whose norm grows with the layer, with a big BOS (position 0) token."""
    g = torch.Generator().manual_seed(seed)
    x_NLD = torch.randn(n_ctx * T, L, D, generator=g) * torch.arange(1, L + 1).view(1, L, 1)
    pos_N = torch.arange(T).repeat(n_ctx)
    x_NLD[pos_N == 0] *= 30.0
    return x_NLD, pos_N


@pytest.mark.parametrize("layers", [[0, 2, 3], [2]])
def test_statistics_match_numpy(layers: list[int]) -> None:
    x_NLD, pos_N = sample(L=len(layers))
    stats = norm_statistics(x_NLD, layers, pos_N)
    assert list(stats) == [f"layer_{i}" for i in layers]
    norms_NL = np.linalg.norm(x_NLD.double().numpy(), axis=-1)
    at0 = pos_N.numpy() == 0
    for j, layer in enumerate(layers):
        row, n = stats[f"layer_{layer}"], norms_NL[:, j]
        assert row["mean"] == pytest.approx(n.mean(), rel=1e-12)
        assert row["std"] == pytest.approx(n.std(ddof=1), rel=1e-12)
        assert row["max"] == pytest.approx(n.max(), rel=1e-12)
        assert row["q50"] == pytest.approx(np.quantile(n, 0.5), rel=1e-12)
        assert row["q99"] == pytest.approx(np.quantile(n, 0.99), rel=1e-12)
        assert row["n_tokens"] == len(n)
        assert row["position_0"]["n_tokens"] == 20
        assert row["position_0"]["mean"] == pytest.approx(n[at0].mean(), rel=1e-12)
        assert row["rest_mean"] == pytest.approx(n[~at0].mean(), rel=1e-12)
        assert row["position_0"]["mean"] > 10 * row["rest_mean"]  # BOS tokens are big
        want = np.quantile(n[~at0], np.arange(1, 10) / 10)
        np.testing.assert_allclose(row["decile_edges"], want, rtol=1e-12)
        edges = np.geomspace(n.min(), n.max(), 41)
        np.testing.assert_allclose(row["histogram"]["edges"], edges, rtol=1e-12)
        assert row["histogram"]["counts"] == np.histogram(n, bins=edges)[0].tolist()
        assert sum(row["histogram"]["counts"]) == len(n)
    torch.testing.assert_close(
        mean_norms(stats, layers), torch.tensor(norms_NL.mean(0)).float(), rtol=1e-6, atol=0
    )


def test_without_position_zero_tokens() -> None:
    x_NLD, pos_N = sample(L=1)
    keep = pos_N != 0  # e.g. exclude_special_tokens dropped every BOS
    row = norm_statistics(x_NLD[keep], [5], pos_N[keep])["layer_5"]
    assert row["position_0"] == {"mean": None, "n_tokens": 0}
    assert row["rest_mean"] == pytest.approx(row["mean"], rel=1e-12)
    unknown = norm_statistics(x_NLD, [5])["layer_5"]  # no positions: all count as rest
    assert unknown["position_0"]["n_tokens"] == 0
    assert unknown["rest_mean"] == pytest.approx(unknown["mean"], rel=1e-12)
