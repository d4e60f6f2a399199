"""Per-feature statistics in one streaming pass, memory bounded by features x k.

Definitions (exact: `tests/test_features.py` checks each against a brute force over the
same tokens). A feature *fires* on a token when its activation f > 0. Over the N counted
tokens: density = #fires / N, mean = sum f / N (over all tokens), max = max f (0 if it
never fires). Histogram of the activations where it fires, in the fixed bins
`HIST_EDGES` (log-spaced, 10 per decade, 1e-4 to 1e4): bin b holds f with
edges[b-1] <= f < edges[b] (bin 0: f < 1e-4, the last bin: f >= 1e4). Top-k: the k
tokens with the largest f > 0, ties broken by the earlier token. Samples: a uniform random
sample (without replacement) of up to n_samples tokens where the feature fires, by the
smallest hash key of (token index, feature) (`sample_key`), from which the pages draw the
lower-quantile contexts. Token index = context * T + position, in the pass's order.

Each kept token stores its context window (`before` tokens before it, `after` after it,
within its context): the token ids and the feature's activation on each, taken from the
batch that holds the token, so nothing is recomputed after the pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

HIST_EDGES = torch.logspace(-4, 4, 81, dtype=torch.float64).float()
_MIX1, _MIX2, _MIX3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE35


def sample_key(token_N: Tensor, feature_N: Tensor) -> Tensor:
    """A pseudo-random 31-bit key per (token, feature), the same on every call."""
    h = (token_N * _MIX1 + feature_N * _MIX2) % (1 << 31)
    h = ((h ^ (h >> 15)) * _MIX3) % (1 << 31)
    return h ^ (h >> 13)


def best_per_group(group_N: Tensor, score_N: Tensor, k: int, n_groups: int) -> Tensor:
    """Indices of the (at most) k entries of each group with the largest score, ties by
    position in the input (earlier first); ordered by group, then rank."""
    order = torch.sort(score_N, descending=True, stable=True).indices
    order = order[torch.sort(group_N[order], stable=True).indices]
    g_sorted = group_N[order]
    counts = torch.bincount(g_sorted, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order)) - starts[g_sorted]
    return order[rank < k]


@dataclass
class Kept:
    """Up to K entries per feature, dense: score [F, K] (the order key: the value for top-k,
    minus the sample key for samples; -inf: empty), value, token (-1: empty), and each
    entry's context window: ids [F, K, W], activations [F, K, W], valid mask [F, K, W].
    Row j is feature j's entries, best first."""

    score: Tensor
    value: Tensor
    token: Tensor
    window_ids: Tensor
    window_acts: Tensor
    window_ok: Tensor

    @classmethod
    def empty(cls, n_features: int, k: int, width: int) -> Kept:
        F = n_features
        return cls(
            torch.full((F, k), -float("inf"), dtype=torch.float64),
            torch.zeros(F, k),
            torch.full((F, k), -1, dtype=torch.long),
            torch.zeros(F, k, width, dtype=torch.long),
            torch.zeros(F, k, width),
            torch.zeros(F, k, width, dtype=torch.bool),
        )

    def fields(self) -> tuple[Tensor, ...]:
        return (
            self.score,
            self.value,
            self.token,
            self.window_ids,
            self.window_acts,
            self.window_ok,
        )

    def merge(self, rows_R: Tensor, new: tuple[Tensor, ...]) -> None:
        """Merge candidates [R, m, ...] (same fields, best first, -inf score: none) into
        rows `rows_R`; on equal scores the entries already kept (earlier tokens) win."""
        K = self.score.shape[1]
        old = tuple(t[rows_R] for t in self.fields())
        both = tuple(torch.cat([a, b], dim=1) for a, b in zip(old, new, strict=True))
        order_RK = torch.sort(both[0], dim=1, descending=True, stable=True).indices[:, :K]
        for mine, cat in zip(self.fields(), both, strict=True):
            index = order_RK.view(*order_RK.shape, *([1] * (cat.dim() - 2)))
            mine[rows_R] = cat.gather(1, index.expand(-1, -1, *cat.shape[2:]))


class FeatureStats:
    """Running statistics of one layer's F features (see the module doc)."""

    def __init__(
        self, n_features: int, k: int = 10, n_samples: int = 24, before: int = 10, after: int = 4
    ) -> None:
        self.F, self.k, self.n_samples = n_features, k, n_samples
        self.before, self.after = before, after
        self.n_tokens = 0
        self.count_F = torch.zeros(n_features, dtype=torch.long)
        self.sum_F = torch.zeros(n_features, dtype=torch.float64)
        self.max_F = torch.zeros(n_features)
        self.hist_FH = torch.zeros(n_features, len(HIST_EDGES) + 1, dtype=torch.long)
        width = before + 1 + after
        self.top = Kept.empty(n_features, k, width)
        self.samples = Kept.empty(n_features, n_samples, width)

    @torch.no_grad()
    def update(
        self, f_CTF: Tensor, ids_CT: Tensor | None, first_token: int, keep_CT: Tensor | None = None
    ) -> None:
        """Add a batch of C whole contexts of T tokens (T = 1 and ids None for token-less
        sources): activations f [C, T, F], token ids [C, T], the index of its first token,
        and which positions count (None: all)."""
        C, T, F = f_CTF.shape
        f_CTF = f_CTF.float()
        if keep_CT is not None:
            f_CTF = f_CTF * keep_CT[..., None]
            self.n_tokens += int(keep_CT.sum())
        else:
            self.n_tokens += C * T
        c_N, t_N, j_N = (f_CTF > 0).nonzero(as_tuple=True)
        v_N = f_CTF[c_N, t_N, j_N]
        self.count_F += torch.bincount(j_N, minlength=F)
        self.sum_F.index_add_(0, j_N, v_N.double())
        self.max_F.scatter_reduce_(0, j_N, v_N, reduce="amax")
        bins_N = torch.bucketize(v_N, HIST_EDGES, right=True)
        H = self.hist_FH.shape[1]
        self.hist_FH += torch.bincount(j_N * H + bins_N, minlength=F * H).view(F, H)
        token_N = first_token + c_N * T + t_N
        key_N = sample_key(token_N, j_N)
        self._offer(self.top, v_N.double(), c_N, t_N, j_N, v_N, token_N, f_CTF, ids_CT)
        self._offer(self.samples, -key_N.double(), c_N, t_N, j_N, v_N, token_N, f_CTF, ids_CT)

    def _offer(
        self,
        kept: Kept,
        score_N: Tensor,
        c_N: Tensor,
        t_N: Tensor,
        j_N: Tensor,
        v_N: Tensor,
        token_N: Tensor,
        f_CTF: Tensor,
        ids_CT: Tensor | None,
    ) -> None:
        """Merge this batch's entries that beat a feature's worst kept one into `kept`."""
        K = kept.score.shape[1]
        sel = torch.nonzero(score_N > kept.score[j_N, K - 1])[:, 0]  # strictly better only
        sel = sel[best_per_group(j_N[sel], score_N[sel], K, self.F)]  # group, then rank
        if not len(sel):
            return
        j_S = j_N[sel]
        rows_R, inverse_S, counts_R = torch.unique(j_S, return_inverse=True, return_counts=True)
        starts_R = torch.cumsum(counts_R, 0) - counts_R
        rank_S = torch.arange(len(sel)) - starts_R[inverse_S]
        R, m, W = len(rows_R), int(counts_R.max()), kept.window_ids.shape[2]
        new = Kept.empty(R, m, W)
        ids_SW, acts_SW, ok_SW = self._windows(c_N[sel], t_N[sel], j_S, f_CTF, ids_CT)
        for dense, flat in zip(
            new.fields(),
            (score_N[sel], v_N[sel], token_N[sel], ids_SW, acts_SW, ok_SW),
            strict=True,
        ):
            dense[inverse_S, rank_S] = flat
        kept.merge(rows_R, new.fields())

    def _windows(
        self, c_N: Tensor, t_N: Tensor, j_N: Tensor, f_CTF: Tensor, ids_CT: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        T = f_CTF.shape[1]
        pos_NW = t_N[:, None] + torch.arange(-self.before, self.after + 1)
        ok_NW = (pos_NW >= 0) & (pos_NW < T)
        pos_NW = pos_NW.clamp(0, T - 1)
        acts_NW = f_CTF[c_N[:, None], pos_NW, j_N[:, None]] * ok_NW
        ids_NW = ids_CT[c_N[:, None], pos_NW].cpu() if ids_CT is not None else pos_NW * 0
        return ids_NW, acts_NW, ok_NW

    # -- results ----------------------------------------------------------------------------
    def density(self) -> Tensor:
        return self.count_F.double() / max(self.n_tokens, 1)

    def mean(self) -> Tensor:
        return self.sum_F / max(self.n_tokens, 1)
