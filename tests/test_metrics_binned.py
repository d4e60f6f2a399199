"""NormBinnedMetrics against an independent numpy computation, by hand, and its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nsae.errors import NsaeError
from nsae.metrics import Batch, NormBinnedMetrics, decile_edges

B, L, D, M = 400, 2, 4, 16
FIELDS = ("count", "mean_norm", "l0", "l1", "nmse", "cosine", "feature_suppression")


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0]).view(1, L, 1)
    x = torch.randn(B, L, D, generator=g) * scale * torch.rand(B, 1, 1, generator=g).add(0.2)
    x_hat = 0.7 * x + 0.2 * torch.randn(B, L, D, generator=g) * scale
    f = torch.relu(torch.randn(B, L, M, generator=g) + x.norm(dim=-1, keepdim=True) / scale - 1)
    pos0 = torch.arange(B) % 50 == 0  # contexts of 50 tokens
    edges = decile_edges(x.norm(dim=-1)[~pos0])
    edges[1, 3] = edges[1, 4]  # an empty bin (4) in layer 1
    # token 1 exactly on an edge (its norm exact in float32 and float64): it is in bin 3
    x[1, 0] = torch.tensor([edges[0, 2].item(), 0.0, 0.0, 0.0])
    edges[0, 2] = x[1, 0, 0].double()
    return {"x": x, "x_hat": x_hat, "f": f, "pos0": pos0, "edges": edges}


def numpy_bins(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """[L, 11] per field, with numpy: np.digitize puts edges[k-1] <= v < edges[k] in bin k."""
    x, x_hat, f = (d[k].numpy().astype(np.float64) for k in ("x", "x_hat", "f"))
    pos0, edges = d["pos0"].numpy(), d["edges"].numpy()
    out = {k: np.full((L, 11), np.nan) for k in FIELDS}
    for j in range(L):
        norm = np.linalg.norm(x[:, j], axis=1)
        hat_norm = np.linalg.norm(x_hat[:, j], axis=1)
        bins = np.where(pos0, 10, np.digitize(norm, edges[j]))
        for k in range(11):
            s = bins == k
            out["count"][j, k] = s.sum()
            if not s.any():
                continue
            out["mean_norm"][j, k] = norm[s].mean()
            out["l0"][j, k] = (f[s, j] > 0).sum(1).mean()
            out["l1"][j, k] = f[s, j].sum(1).mean()
            out["nmse"][j, k] = ((x_hat[s, j] - x[s, j]) ** 2).sum() / (norm[s] ** 2).sum()
            cos = (x[s, j] * x_hat[s, j]).sum(1) / norm[s] / hat_norm[s]
            out["cosine"][j, k] = cos.mean()
            out["feature_suppression"][j, k] = hat_norm[s].sum() / norm[s].sum()
    return out


def binned(d: dict[str, torch.Tensor], chunk: int = B) -> NormBinnedMetrics:
    m = NormBinnedMetrics(L, d["edges"])
    for idx in torch.arange(B).split(chunk):
        m.update(Batch(d["x"][idx], d["x_hat"][idx], d["f"][idx]), d["pos0"][idx])
    return m


def test_every_bin_matches_numpy(data) -> None:
    ref, got = numpy_bins(data), binned(data, chunk=33).compute()
    assert ref["count"][1, 4] == 0 and ref["count"][:, 10].tolist() == [8, 8]
    assert ref["count"][:, :10].sum() == 2 * (B - 8)  # position 0 is in no decile
    for name in FIELDS:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-6, err_msg=name)


def test_token_on_an_edge_is_in_the_upper_bin(data) -> None:
    """Token 1 of layer 0 has ||x|| == edges[0, 2]: bin 3 = [edges[2], edges[3])."""
    one = {k: v[1:2] if k != "edges" else v for k, v in data.items()}
    m = NormBinnedMetrics(L, data["edges"])
    m.update(Batch(one["x"], one["x_hat"], one["f"]), one["pos0"])
    assert m.compute()["count"][0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def test_slope_equals_polyfit_on_the_same_tokens(data) -> None:
    x, f, pos0 = data["x"].double(), data["f"], data["pos0"]
    got = binned(data, chunk=71).compute()["l0_norm_slope"]
    for j in range(L):
        l0 = (f[:, j] > 0).sum(1).double()
        keep = ~pos0 & (l0 > 0)
        assert (~keep).sum() > 0 and keep.sum() > 100  # some tokens left out, most kept
        slope = np.polyfit(x[keep, j].norm(dim=-1).log().numpy(), l0[keep].log().numpy(), 1)[0]
        assert got[j].item() == pytest.approx(slope, rel=1e-7)  # norms in float32


def test_slope_of_a_power_law_by_hand() -> None:
    """L0 = ||x||^2 exactly (norms 1, 2, 4, 8; L0 1, 4, 16, 64): slope 2; the position-0
    token (norm 8, L0 1) and an L0 = 0 token would break it if they were counted."""
    norms = torch.tensor([1.0, 2.0, 4.0, 8.0, 8.0, 3.0])
    l0 = torch.tensor([1, 4, 16, 64, 1, 0])
    x = torch.zeros(6, 1, 2)
    x[:, 0, 0] = norms
    f = (torch.arange(64)[None] < l0[:, None]).float()[:, None]  # [6, 1, 64]
    m = NormBinnedMetrics(1, torch.linspace(1.5, 7.5, 9)[None])
    m.update(Batch(x, x, f), torch.tensor([False, False, False, False, True, False]))
    assert m.compute()["l0_norm_slope"].tolist() == pytest.approx([2.0], rel=1e-12)


def test_json_layout(data) -> None:
    m, layers = binned(data), [3, 7]
    out = json.loads(json.dumps(m.to_json(layers)))  # plain JSON types only
    assert set(out) == {"by_norm_decile", "l0_norm_slope"}
    by = out["by_norm_decile"]
    assert set(by) == {"layer_3", "layer_7", "position_0"}
    ref, edges = numpy_bins(data), data["edges"].tolist()
    for j, layer in enumerate(layers):
        rows = by[f"layer_{layer}"]
        assert [r["bin"] for r in rows] == list(range(10))
        assert [r["lo"] for r in rows] == [None, *edges[j]]
        assert [r["hi"] for r in rows] == [*edges[j], None]
        for k, r in enumerate(rows):
            assert set(r) == {"bin", "lo", "hi", *FIELDS}
            assert r["count"] == ref["count"][j, k] and isinstance(r["count"], int)
            for name in FIELDS[1:]:
                if r["count"] == 0:
                    assert r[name] is None
                else:
                    assert r[name] == pytest.approx(ref[name][j, k], rel=1e-6)
        p0 = by["position_0"][f"layer_{layer}"]
        assert set(p0) == {"bin", "lo", "hi", *FIELDS} and p0["bin"] == "position_0"
        assert p0["lo"] is None and p0["hi"] is None and p0["count"] == 8
        assert p0["l0"] == pytest.approx(ref["l0"][j, 10], rel=1e-6)
    slopes = out["l0_norm_slope"]
    assert set(slopes) == {"layer_3", "layer_7", "mean"}
    assert slopes["mean"] == pytest.approx((slopes["layer_3"] + slopes["layer_7"]) / 2)


def test_decile_edges_are_the_numpy_quantiles(data) -> None:
    norms = data["x"].norm(dim=-1)
    ref = np.quantile(norms.double().numpy(), np.arange(1, 10) / 10, axis=0).T
    np.testing.assert_allclose(decile_edges(norms).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize(
    "edges, match",
    [
        (torch.ones(2, 8), r"shape \(2, 8\); expected \[n_layers, 9\] = \[2, 9\]"),
        (torch.linspace(2, 1, 9).expand(2, 9), "non-decreasing"),
        (torch.full((2, 9), float("nan")), "finite"),
    ],
)
def test_bad_edges_are_one_clear_error(edges, match) -> None:
    with pytest.raises(NsaeError, match=match):
        NormBinnedMetrics(2, edges)


def test_edges_set_later_equal_edges_given_at_once(data) -> None:
    later = NormBinnedMetrics(L, torch.zeros(L, 9))  # placeholder edges, as in the module
    later.set_edges(data["edges"])
    b = Batch(data["x"], data["x_hat"], data["f"])
    later.update(b, data["pos0"])
    for name, value in binned(data).compute().items():
        torch.testing.assert_close(later.compute()[name], value, equal_nan=True, msg=name)
