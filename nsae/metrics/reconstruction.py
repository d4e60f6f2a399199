"""Reconstruction metrics, per layer: how close x_hat is to x."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from nsae.metrics.base import Batch, LayerMetric, RatioOfSums


class MSE(RatioOfSums):
    """Mean over tokens of ||x_hat - x||^2."""

    def numerator(self, b: Batch) -> Tensor:
        return b.sq_err_BL


class Cosine(RatioOfSums):
    """Mean over tokens of cos(x_hat, x)."""

    def numerator(self, b: Batch) -> Tensor:
        return b.cos_BL


class FeatureSuppression(RatioOfSums):
    """sum ||x_hat|| / sum ||x||: 1 is ideal, below 1 is shrinkage."""

    def numerator(self, b: Batch) -> Tensor:
        return b.x_hat_norm_BL

    def denominator(self, b: Batch) -> Tensor:
        return b.x_norm_BL


class RelativeReconstructionBias(RatioOfSums):
    """E||x_hat||^2 / E<x, x_hat>."""

    def numerator(self, b: Batch) -> Tensor:
        return b.x_hat_norm_BL.pow(2)

    def denominator(self, b: Batch) -> Tensor:
        return (b.x_BLD * b.x_hat_BLD).sum(-1)


class FVU(LayerMetric):
    """sum ||x_hat - x||^2 / sum ||x - mean(x)||^2, the mean over all evaluated tokens.

    sum ||x - mu||^2 = sum ||x||^2 - ||sum x||^2 / N, so sums suffice.
    """

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {
        "sse": ("L",),
        "sum_x": ("L", "D"),
        "sum_sq": ("L",),
        "n": ("L",),
    }

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        x = b.x_BLD.double()  # sum_x and sum_sq cancel in the variance: keep them exact
        return {
            "sse": b.sq_err_BL.double().sum(0),
            "sum_x": x.sum(0),
            "sum_sq": x.pow(2).sum((0, 2)),
            "n": b.ones_BL.double().sum(0),
        }

    def compute(self) -> Tensor:
        total_var = self.sum_sq - self.sum_x.pow(2).sum(-1) / self.n
        return self.sse / total_var


class ExplainedVariance(FVU):
    """1 - fvu."""

    def compute(self) -> Tensor:
        return 1 - super().compute()
