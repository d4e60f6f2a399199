"""Sparsity metrics, per layer: how many features fire, how strongly, and how often."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from nsae.metrics.base import Batch, LayerMetric, RatioOfSums


class L0(RatioOfSums):
    """Mean over tokens of the number of active features."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l0_BL


class L1(RatioOfSums):
    """Mean over tokens of sum_j f_j."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l1_BL


class L1L0Ratio(RatioOfSums):
    """l1 / l0 = sum f / sum #active: the mean activation of an active feature."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l1_BL

    def denominator(self, b: Batch) -> Tensor:
        return b.l0_BL


class NormL0Corr(LayerMetric):
    """Pearson correlation, within a layer, between ||x|| and the token's L0."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {
        k: ("L",) for k in ("n", "a", "b", "aa", "bb", "ab")
    }

    def batch_sums(self, batch: Batch) -> dict[str, Tensor]:
        a, b = batch.x_norm_BL.double(), batch.l0_BL.double()
        return {
            "n": torch.ones_like(a).sum(0),
            "a": a.sum(0),
            "b": b.sum(0),
            "aa": (a * a).sum(0),
            "bb": (b * b).sum(0),
            "ab": (a * b).sum(0),
        }

    def compute(self) -> Tensor:
        cov = self.ab - self.a * self.b / self.n
        var_a = self.aa - self.a.pow(2) / self.n
        var_b = self.bb - self.b.pow(2) / self.n
        return cov / (var_a * var_b).sqrt()


class FeatureDensity(LayerMetric):
    """Per-feature firing counts: the firing frequency of each feature, [L, M]."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {"fired": ("L", "M"), "n": ("L",)}

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        return {"fired": b.active_BLM.sum(0), "n": b.ones_BL.double().sum(0)}

    def compute(self) -> Tensor:
        return self.fired / self.n.unsqueeze(-1)


class RecentFiring(LayerMetric):
    """The last training step at which each feature fired (max over ranks), for dead_fraction
    over a window of recent steps; constant size however long training runs."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {"last_fired": ("L", "M"), "step": ()}

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__(n_layers, d_model, n_features)
        # Maxima across ranks, not sums; a feature that never fired has last_fired = -inf.
        never = torch.full((n_layers, n_features), float("-inf"), dtype=torch.float64)
        self.add_state("last_fired", never, dist_reduce_fx="max")
        self.add_state("step", torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def accumulate(self, b: Batch) -> None:
        self.update_fired(b.fired_LM)

    def update_fired(self, fired_LM: Tensor) -> None:
        """One training step: `fired_LM` [L, M] says which features fired on its batch."""
        self.last_fired = torch.where(fired_LM, self.step, self.last_fired)
        self.step = self.step + 1

    def dead_mask(self, window_steps: int) -> Tensor:
        """[L, M] bool: features with no firing in the last `window_steps` updates (over all
        ranks)."""
        with self.sync_context():
            return self.last_fired < self.step - window_steps

    def dead_fraction(self, window_steps: int) -> Tensor:
        """Fraction of features with no firing in the last `window_steps` updates."""
        return self.dead_mask(window_steps).double().mean(-1)

    def compute(self) -> Tensor:
        raise NotImplementedError("use dead_fraction(window_steps)")
