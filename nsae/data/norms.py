"""Per-layer statistics of the input norm ||x||, measured once before training on a sample
of the train split (never on evaluation tokens)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DECILES = tuple(k / 10 for k in range(1, 10))
HISTOGRAM_BINS = 40


def _histogram(norms_N: np.ndarray) -> dict[str, list[float]]:
    """Counts of ||x|| in HISTOGRAM_BINS log-spaced bins from the smallest positive norm
    to the largest (a zero norm falls in the first bin)."""
    positive = norms_N[norms_N > 0]
    lo = float(positive.min()) if len(positive) else 1.0
    hi = max(float(norms_N.max()), lo)
    edges = np.geomspace(lo, hi, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(norms_N, lo, hi), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def norm_statistics(
    x_NLD: Tensor, layers: list[int], pos_N: Tensor | None = None
) -> dict[str, dict[str, Any]]:
    """Statistics of ||x|| per layer, {layer_i: row}; row holds

    - mean, std (unbiased), max, q01 .. q99 (linear-interpolated quantiles), n_tokens;
    - position_0: {mean, n_tokens} over the tokens at sequence position 0 (each context's
      BOS; mean is None when there are none), and rest_mean over all other tokens;
    - decile_edges: the 9 interior edges q10 .. q90 of ||x|| over the tokens not at
      position 0 (bins for evaluation tokens by norm);
    - histogram: {edges (41), counts (40)} with log-spaced bins between min and max.

    `pos_N` is each token's position in its context; None counts every token as "rest".
    """
    norms_NL = x_NLD.double().norm(dim=-1).cpu()
    at0_N = torch.zeros(len(norms_NL), dtype=torch.bool) if pos_N is None else pos_N.cpu() == 0
    q_QL = torch.quantile(norms_NL, torch.tensor(QUANTILES, dtype=torch.float64), dim=0)
    rest_NL = norms_NL[~at0_N]
    d_QL = torch.quantile(rest_NL, torch.tensor(DECILES, dtype=torch.float64), dim=0)
    n0 = int(at0_N.sum())
    stats: dict[str, dict[str, Any]] = {}
    for j, layer in enumerate(layers):
        col_N = norms_NL[:, j]
        row: dict[str, Any] = {"mean": col_N.mean().item(), "std": col_N.std().item()}
        row |= {f"q{round(q * 100):02d}": q_QL[k, j].item() for k, q in enumerate(QUANTILES)}
        row["n_tokens"] = float(len(norms_NL))
        row["max"] = col_N.max().item()
        row["position_0"] = {
            "mean": col_N[at0_N].mean().item() if n0 else None,
            "n_tokens": n0,
        }
        row["rest_mean"] = rest_NL[:, j].mean().item()
        row["decile_edges"] = d_QL[:, j].tolist()
        row["histogram"] = _histogram(col_N.numpy())
        stats[f"layer_{layer}"] = row
    return stats


def mean_norms(stats: dict[str, dict[str, Any]], layers: list[int]) -> Tensor:
    """The per-layer mean norm n_l, as a tensor [L]."""
    return torch.tensor([stats[f"layer_{layer}"]["mean"] for layer in layers])


NORMALIZE_ACTIVATIONS = ("none", "expected_norm")


def add_input_scales(
    stats: dict[str, dict[str, Any]], layers: list[int], method: str, d_model: int
) -> None:
    """Record each layer's input scale s_l in its row as "input_scale" (in place).

    `none`: s_l = 1. `expected_norm`: s_l = sqrt(d) / n_l, with n_l = mean_t ||x_t^l|| over
    the norm sample (the row's "mean"), so that the scaled sample s_l x has mean norm
    sqrt(d). The SAE trains on s_l x; it is folded back to raw units before the final
    evaluation and the export (`SAE.rescale_layer_(l, 1 / s_l)`).
    """
    if method not in NORMALIZE_ACTIVATIONS:
        raise ValueError(
            f"data.normalize_activations={method!r}; valid: {', '.join(NORMALIZE_ACTIVATIONS)}"
        )
    for layer in layers:
        row = stats[f"layer_{layer}"]
        mean = float(row["mean"])
        row["input_scale"] = d_model**0.5 / mean if method == "expected_norm" and mean > 0 else 1.0


def input_scales(stats: dict[str, dict[str, Any]], layers: list[int]) -> Tensor:
    """The per-layer input scale s_l, as a tensor [L] (1 where none was recorded)."""
    return torch.tensor([float(stats[f"layer_{i}"].get("input_scale", 1.0)) for i in layers])
