"""Metrics per input-norm bin: how an SAE treats low- and high-norm tokens of one layer.

Per layer, each token not at position 0 falls in one of 10 bins by its input norm ||x||,
between 9 interior edges given from outside (the deciles of ||x|| on a norm sample, see
`decile_edges`): bin k holds edges[k-1] <= ||x|| < edges[k] (bin 0 everything below
edges[0], bin 9 everything from edges[8] up). Position 0 (BOS) tokens, whose norm is
atypical, form an 11th bin of their own and are in no decile.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nsae.errors import NsaeError
from nsae.metrics.base import Batch, ShapedMetric
from nsae.metrics.summary import finite_or_none

N_DECILES = 10
POS0 = N_DECILES  # the index of the position-0 bin
BIN_SUMS = ("count", "norm", "l0", "l1", "sq_err", "sq_norm", "cos", "x_hat_norm")
SLOPE_SUMS = ("n", "u", "v", "uu", "uv")  # u = log ||x||, v = log L0
FIELDS = ("count", "mean_norm", "l0", "l1", "nmse", "cosine", "feature_suppression")


def decile_edges(norms_NL: Tensor) -> Tensor:
    """[L, 9]: the 10%, ..., 90% quantiles of each layer's norms [N, L] (pass the tokens
    not at position 0), in float64."""
    q = torch.linspace(0.1, 0.9, N_DECILES - 1, dtype=torch.float64)
    return torch.quantile(norms_NL.double(), q, dim=0).T.contiguous()


class NormBinnedMetrics(ShapedMetric):
    """Per layer and per bin (10 norm deciles, then position 0 last), as [L, 11]:
      count; mean_norm = mean ||x||; l0 = mean #{j : f_j > 0}; l1 = mean sum_j f_j;
      nmse = sum ||x - x_hat||^2 / sum ||x||^2; cosine = mean cos(x_hat, x);
      feature_suppression = sum ||x_hat|| / sum ||x||.
    An empty bin gives count 0 and NaN elsewhere (null in JSON).

    And per layer, as [L]: l0_norm_slope, the least-squares slope b of log L0 = a + b log ||x||
    over the tokens not at position 0 with L0 > 0 (and ||x|| > 0); 1 means L0 proportional
    to ||x||, 0 means L0 independent of it.
    """

    def __init__(self, n_layers: int, edges_L9: Tensor) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.register_buffer("edges_L9", torch.zeros(n_layers, N_DECILES - 1), persistent=False)
        self.set_edges(edges_L9)
        for name in BIN_SUMS:
            self.add_sum_state(f"bin_{name}", (n_layers, N_DECILES + 1))
        for name in SLOPE_SUMS:
            self.add_sum_state(f"slope_{name}", (n_layers,))

    def set_edges(self, edges_L9: Tensor) -> None:
        """Replace the 9 interior decile edges of each layer, [L, 9] (e.g. once the norm
        sample is known, after the metric was made with placeholder edges)."""
        edges_L9 = torch.as_tensor(edges_L9, dtype=torch.float64)
        if edges_L9.shape != (self.n_layers, N_DECILES - 1):
            raise NsaeError(
                f"norm decile edges have shape {tuple(edges_L9.shape)}; "
                f"expected [n_layers, 9] = [{self.n_layers}, 9]"
            )
        if not torch.isfinite(edges_L9).all() or (edges_L9.diff(dim=-1) < 0).any():
            raise NsaeError("norm decile edges must be finite and non-decreasing in each layer")
        self.edges_L9 = edges_L9.to(self.edges_L9.device).contiguous()

    def update(self, b: Batch, pos0_B: Tensor) -> None:
        """`pos0_B` (bool [B]): whether each token of the batch is at position 0."""
        pos0_B = pos0_B.to(b.x_BLD.device)
        norm_LB = b.x_norm_BL.double().T.contiguous()
        decile_LB = torch.searchsorted(self.edges_L9.to(norm_LB), norm_LB, right=True)
        bin_LB = torch.where(pos0_B[None], POS0, decile_LB)
        per_token = {
            "count": b.ones_BL,
            "norm": b.x_norm_BL,
            "l0": b.l0_BL,
            "l1": b.l1_BL,
            "sq_err": b.sq_err_BL,
            "sq_norm": b.x_norm_BL.double().pow(2),
            "cos": b.cos_BL,
            "x_hat_norm": b.x_hat_norm_BL,
        }
        for name, v_BL in per_token.items():
            state = getattr(self, f"bin_{name}")
            added = torch.zeros_like(state).scatter_add_(1, bin_LB, v_BL.double().T)
            setattr(self, f"bin_{name}", state + added)
        l0_LB = b.l0_BL.double().T
        fit_LB = (~pos0_B)[None] & (l0_LB > 0) & (norm_LB > 0)
        u_LB = torch.where(fit_LB, norm_LB.log(), 0.0)
        v_LB = torch.where(fit_LB, l0_LB.log(), 0.0)
        for name, s_LB in zip(
            SLOPE_SUMS, (fit_LB.double(), u_LB, v_LB, u_LB * u_LB, u_LB * v_LB), strict=True
        ):
            setattr(self, f"slope_{name}", getattr(self, f"slope_{name}") + s_LB.sum(1))

    def compute(self) -> dict[str, Tensor]:
        """Each field [L, 11] (deciles 0..9, then position 0), and l0_norm_slope [L]."""
        s = {name: getattr(self, f"bin_{name}") for name in BIN_SUMS}
        n = s["count"]
        n_, u, v = self.slope_n, self.slope_u, self.slope_v
        return {
            "count": n,
            "mean_norm": s["norm"] / n,
            "l0": s["l0"] / n,
            "l1": s["l1"] / n,
            "nmse": s["sq_err"] / s["sq_norm"],
            "cosine": s["cos"] / n,
            "feature_suppression": s["x_hat_norm"] / s["norm"],
            "l0_norm_slope": (n_ * self.slope_uv - u * v) / (n_ * self.slope_uu - u * u),
        }

    def to_json(self, layers: list[int]) -> dict[str, Any]:
        """{"by_norm_decile": {"layer_<i>": [10 bins], "position_0": {"layer_<i>": bin}},
        "l0_norm_slope": {"layer_<i>": slope, "mean": mean over layers}}; each bin is
        {bin, lo, hi, count, mean_norm, l0, l1, nmse, cosine, feature_suppression}, with
        lo = null for bin 0, hi = null for bin 9 (position 0: bin "position_0", lo and hi
        null), and null values where a bin is empty."""
        if len(layers) != self.n_layers:
            raise NsaeError(f"{len(layers)} layer names {layers} for {self.n_layers} layers")
        values = {k: v.detach().cpu().tolist() for k, v in self.compute().items()}
        edges = self.edges_L9.cpu().tolist()

        def row(j: int, k: int, lo: float | None, hi: float | None) -> dict[str, Any]:
            out: dict[str, Any] = {"lo": lo, "hi": hi, "count": int(values["count"][j][k])}
            for field in FIELDS[1:]:
                out[field] = finite_or_none(values[field][j][k]) if out["count"] else None
            return out

        deciles, pos0, slopes = {}, {}, {}
        for j, layer in enumerate(layers):
            bounds = [None, *edges[j], None]
            deciles[f"layer_{layer}"] = [
                {"bin": k} | row(j, k, bounds[k], bounds[k + 1]) for k in range(N_DECILES)
            ]
            pos0[f"layer_{layer}"] = {"bin": "position_0"} | row(j, POS0, None, None)
            slopes[f"layer_{layer}"] = finite_or_none(values["l0_norm_slope"][j])
        finite = [s for s in slopes.values() if s is not None]
        mean = sum(finite) / len(finite) if len(finite) == len(slopes) else None
        return {
            "by_norm_decile": deciles | {"position_0": pos0},
            "l0_norm_slope": slopes | {"mean": mean},
        }
