"""The registry of per-layer metrics (`METRICS`) and a named set updated together."""

from __future__ import annotations

from torch import Tensor, nn

from nsae.metrics.base import Batch, LayerMetric
from nsae.metrics.reconstruction import (
    FVU,
    MSE,
    Cosine,
    ExplainedVariance,
    FeatureSuppression,
    RelativeReconstructionBias,
)
from nsae.metrics.sparsity import L0, L1, L1L0Ratio, NormL0Corr

METRICS: dict[str, type[LayerMetric]] = {
    "l0": L0,
    "l1": L1,
    "l1_l0_ratio": L1L0Ratio,
    "mse": MSE,
    "fvu": FVU,
    "explained_variance": ExplainedVariance,
    "cosine": Cosine,
    "feature_suppression": FeatureSuppression,
    "relative_reconstruction_bias": RelativeReconstructionBias,
    "norm_l0_corr": NormL0Corr,
}


class SAEMetrics(nn.Module):
    """A named set of per-layer metrics updated together; each result is [L]."""

    def __init__(self, names: list[str], n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__()
        unknown = sorted(set(names) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; valid: {', '.join(METRICS)}")
        self.metrics = nn.ModuleDict({n: METRICS[n](n_layers, d_model, n_features) for n in names})

    def update(self, *args: Tensor | Batch, **known: Tensor) -> Batch:
        """Update every metric from one shared `Batch`, given or made from the tensors
        (x_BLD, x_hat_BLD, f_BLM) and `known` quantities; return it for further metrics."""
        b = Batch.of(*args, **known)
        for metric in self.metrics.values():
            metric.update(b)
        return b

    def compute(self) -> dict[str, Tensor]:
        return {name: metric.compute() for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
