"""SAEBench-compatible token metrics (its core eval's names and definitions), alongside
nsae's own; the downstream ones (kl_div_score, ce_loss_score) are in `SpliceMetrics`.

SAEBench counts only the positions whose input token is not BOS, EOS or pad: the caller
passes that mask (`saebench_mask`), per context [B, T] or per harvested token [B].
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from nsae.metrics.base import Batch, ShapedMetric

L2_RATIO_MIN_NORM = 1e-4  # SAEBench divides by 1 instead of an input norm below this


def saebench_mask(ids_BT: Tensor, ignore_ids: Iterable[int | None]) -> Tensor:
    """bool [B, T]: True at the positions SAEBench counts, those whose input token is not
    one of `ignore_ids` (SAEBench ignores the BOS, EOS and pad token ids; None is skipped)."""
    ignore = torch.tensor([i for i in ignore_ids if i is not None], dtype=ids_BT.dtype)
    return ~torch.isin(ids_BT, ignore.to(ids_BT.device))


class SAEBenchMetrics(ShapedMetric):
    """Per layer, over the tokens in `keep_B` (SAEBench's mask), each result [L]:
    l2_ratio = mean over tokens of ||x_hat|| / ||x|| (||x|| < 1e-4 counts as 1);
    frac_alive = the fraction of features with density > 0, i.e. that fired (f > 0) on
      at least one of these tokens.
    """

    def __init__(self, n_layers: int, n_features: int) -> None:
        super().__init__()
        self.add_sum_state("l2_ratio_sum", (n_layers,))
        self.add_sum_state("n", (n_layers,))
        self.add_sum_state("fired", (n_layers, n_features))  # firing counts

    def update(self, b: Batch, keep_B: Tensor) -> None:
        """`keep_B` (bool [B]): the tokens of the batch to count."""
        w_B1 = keep_B.to(b.x_BLD.device).double()[:, None]
        norm_BL = b.x_norm_BL.double()
        norm_BL = torch.where(norm_BL < L2_RATIO_MIN_NORM, 1.0, norm_BL)
        self.l2_ratio_sum = self.l2_ratio_sum + (b.x_hat_norm_BL.double() / norm_BL * w_B1).sum(0)
        self.n = self.n + (b.ones_BL.double() * w_B1).sum(0)
        self.fired = self.fired + torch.einsum("blm,b->lm", b.active_BLM, w_B1[:, 0].float())

    def compute(self) -> dict[str, Tensor]:
        return {
            "l2_ratio": self.l2_ratio_sum / self.n,
            "frac_alive": (self.fired > 0).double().mean(-1),
        }
