"""Per-layer statistics of the input norm ||x||, measured once before training."""

from __future__ import annotations

import torch
from torch import Tensor

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def norm_statistics(x_NLD: Tensor, layers: list[int]) -> dict[str, dict[str, float]]:
    """{layer_i: {mean, std, q01 .. q99, n_tokens}} of ||x|| over the sample."""
    norms_NL = x_NLD.double().norm(dim=-1)
    q_QL = torch.quantile(norms_NL, torch.tensor(QUANTILES, dtype=torch.float64), dim=0)
    stats = {}
    for j, layer in enumerate(layers):
        row = {"mean": norms_NL[:, j].mean().item(), "std": norms_NL[:, j].std().item()}
        row |= {f"q{round(q * 100):02d}": q_QL[k, j].item() for k, q in enumerate(QUANTILES)}
        row["n_tokens"] = float(len(norms_NL))
        stats[f"layer_{layer}"] = row
    return stats


def mean_norms(stats: dict[str, dict[str, float]], layers: list[int]) -> Tensor:
    """The per-layer mean norm n_l, as a tensor [L]."""
    return torch.tensor([stats[f"layer_{layer}"]["mean"] for layer in layers])
