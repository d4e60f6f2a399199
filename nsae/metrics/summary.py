"""metrics.json helpers: per-layer rows, cross-layer statistics, density histograms."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nsae.errors import NsaeError


def finite_or_none(v: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite value is None (null)."""
    return v if math.isfinite(v) else None


def per_layer_dict(
    values: dict[str, Tensor], layers: list[int]
) -> dict[str, dict[str, float | None]]:
    """{metric: {layer_i: v, ..., mean: v}} from {metric: tensor[L]} (a 0-d tensor is
    taken as [1] when there is one layer); a non-finite value (e.g. a correlation with a
    constant) is None, and so is a mean over it."""
    out: dict[str, dict[str, float | None]] = {}
    for name, value in values.items():
        if value.numel() != len(layers):
            raise NsaeError(
                f"metric {name!r} has {value.numel()} values for {len(layers)} layers "
                f"{layers}; a per-layer metric has one value per layer"
            )
        v_L = value.detach().double().cpu().reshape(len(layers))
        row = {f"layer_{i}": finite_or_none(v) for i, v in zip(layers, v_L.tolist(), strict=True)}
        row["mean"] = finite_or_none(float(v_L.mean()))
        out[name] = row
    return out


def cross_layer_stats(l0_L: list[float], mean_norm_L: list[float]) -> dict[str, float | None]:
    """Across layers: Pearson r between each layer's mean input norm and its mean L0, and the
    coefficient of variation (std / mean, population std) of the mean L0 across layers."""
    l0, norm = (
        torch.tensor(l0_L, dtype=torch.float64).reshape(-1),
        torch.tensor(mean_norm_L, dtype=torch.float64).reshape(-1),
    )
    cv = (l0.std(correction=0) / l0.mean()).item()
    if len(l0) < 2 or l0.std() == 0 or norm.std() == 0:
        return {"l0_cv": cv, "norm_l0_corr": None}
    r = torch.corrcoef(torch.stack([norm, l0]))[0, 1].item()
    return {"l0_cv": cv, "norm_l0_corr": r}


def density_histogram(density_LM: Tensor, layers: list[int]) -> dict[str, dict[str, list]]:
    """Per layer: how many features fire with each log10 frequency (12 bins from 1e-6 to 1;
    rarer ones fall in the first bin), and how many never fired."""
    edges = torch.linspace(-6, 0, 13, dtype=torch.float64)
    density_LM = density_LM.detach().double().cpu().reshape(len(layers), -1)
    out = {}
    for j, layer in enumerate(layers):
        d = density_LM[j]
        log_d = d[d > 0].log10().clamp(-6, 0)
        counts = torch.histogram(log_d, bins=edges).hist.long().tolist()
        out[f"layer_{layer}"] = {
            "log10_edges": edges.tolist(),
            "counts": counts,
            "never_fired": int((d == 0).sum()),
        }
    return out
