"""Decoder geometry: norms, nearest neighbours within a dictionary, and the optimal
one-to-one pairing of two dictionaries' features.

Cosines are signed (a feature's activation is non-negative, so d and -d are different
features). Nearest neighbour of feature j: the other feature of the same dictionary with
the largest cosine. Pairing (`--compare`): the one-to-one assignment that maximises the
sum of cosines (`scipy.optimize.linear_sum_assignment` on -cosine; with F_a != F_b, the
larger side keeps |F_a - F_b| features unpaired). A feature has *no counterpart* when it
is unpaired or its pair's cosine is below the threshold (default 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def unit_rows(W_FD: Tensor) -> Tensor:
    return W_FD / W_FD.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosine(a_FD: Tensor, b_GD: Tensor) -> Tensor:
    """[F, G] cosine between every row of a and every row of b."""
    return unit_rows(a_FD.double()) @ unit_rows(b_GD.double()).T


@torch.no_grad()
def nearest_neighbours(W_FD: Tensor, k: int = 5, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Each feature's k nearest other features by decoder cosine: (ids [F, k], cos [F, k])."""
    F = W_FD.shape[0]
    k = min(k, F - 1)
    if k <= 0:
        return torch.zeros(F, 0, dtype=torch.long), torch.zeros(F, 0)
    U_FD = unit_rows(W_FD.float())
    ids, vals = [], []
    for start in range(0, F, chunk):
        cos_fF = U_FD[start : start + chunk] @ U_FD.T
        rows = torch.arange(cos_fF.shape[0])
        cos_fF[rows, rows + start] = -float("inf")
        top = cos_fF.topk(k, dim=1)
        ids.append(top.indices)
        vals.append(top.values)
    return torch.cat(ids), torch.cat(vals)


@dataclass
class Pairing:
    """The optimal pairing of a's features with b's: partner_a[i] = b's feature paired with
    a's feature i (-1: none), cos_a[i] its cosine (nan: none), likewise for b."""

    partner_a: np.ndarray
    cos_a: np.ndarray
    partner_b: np.ndarray
    cos_b: np.ndarray
    threshold: float

    def unmatched_a(self) -> np.ndarray:
        return np.flatnonzero(~(self.cos_a >= self.threshold))

    def unmatched_b(self) -> np.ndarray:
        return np.flatnonzero(~(self.cos_b >= self.threshold))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a ids, b ids, cosines) of every pair, in a's order."""
        rows = np.flatnonzero(self.partner_a >= 0)
        return rows, self.partner_a[rows], self.cos_a[rows]


def pair(W_a_FD: Tensor, W_b_GD: Tensor, threshold: float = 0.5) -> Pairing:
    """The optimal one-to-one pairing by decoder cosine (see the module doc)."""
    from scipy.optimize import linear_sum_assignment

    cos = cosine(W_a_FD, W_b_GD).numpy()
    rows, cols = linear_sum_assignment(-cos)
    F, G = cos.shape
    partner_a, partner_b = np.full(F, -1), np.full(G, -1)
    cos_a, cos_b = np.full(F, np.nan), np.full(G, np.nan)
    partner_a[rows], partner_b[cols] = cols, rows
    cos_a[rows] = cos_b[cols] = cos[rows, cols]
    return Pairing(partner_a, cos_a, partner_b, cos_b, threshold)


def ground_truth_match(W_dec_FD: Tensor, truth_GD: Tensor) -> tuple[Tensor, Tensor]:
    """Each feature's best-matching true feature by |cosine| (as the report's MCC reads
    them, `nsae.metrics.ground_truth.abs_cosine`): (ids [F], |cos| [F])."""
    from nsae.metrics.ground_truth import abs_cosine

    best = abs_cosine(W_dec_FD.float(), truth_GD.float()).max(dim=1)
    return best.indices, best.values
