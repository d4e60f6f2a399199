"""Seed statistics and interpolation in log L0: pure functions of plain numbers.

- `mean_ci`: over n seeds, mean m and the 95% Student-t half-width
  h = t_{0.975, n-1} * s / sqrt(n) (s: the sample standard deviation, ddof 1); n = 1: no h.
- `diff_ci`: the difference of two independent means a - b with Welch's half-width
  h = t_{0.975, nu} * sqrt(s_a^2/n_a + s_b^2/n_b), nu the Welch-Satterthwaite degrees of
  freedom; no h unless both sides have n >= 2.
- `contrast_ci`: a weighted sum of independent means sum_i w_i mean_i (e.g. a difference
  in differences) with the Welch half-width t_{0.975, nu} * sqrt(sum_i w_i^2 s_i^2 / n_i).
- `interp_log`: y at a target L0 by linear interpolation in log L0 between the two
  neighbouring points; outside the points' range, linear extrapolation from the two end
  points, flagged.
- `frontier`: the Pareto frontier of (L0, metric) points: the points that no other point
  beats on both (lower or equal L0 and a better or equal metric, one strictly).
- `shared_range` and `log_targets`: the L0 range every curve covers, and n log-spaced
  targets inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

LEVEL = 0.95


@dataclass(frozen=True)
class Stat:
    """A mean over seeds with its 95% CI half-width (None for n < 2)."""

    mean: float
    half: float | None
    n: int

    @property
    def lo(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def hi(self) -> float | None:
        return None if self.half is None else self.mean + self.half

    def text(self) -> str:
        if self.half is None:
            return f"{self.mean:.4g} (n={self.n})"
        return f"{self.mean:.4g} ± {self.half:.2g} (n={self.n})"

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci_lo": self.lo, "ci_hi": self.hi, "n": self.n}


def mean_ci(values: Sequence[float | None]) -> Stat | None:
    """Mean and 95% Student-t CI over the finite values; None if there is none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return None
    if len(v) < 2:
        return Stat(float(v[0]), None, 1)
    half = st.t.ppf(0.5 + LEVEL / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return Stat(float(v.mean()), float(half), len(v))


def diff_ci(a: Sequence[float | None], b: Sequence[float | None]) -> Stat | None:
    """mean(a) - mean(b) with Welch's 95% half-width; n is min(n_a, n_b)."""
    va = np.array([x for x in a if x is not None and math.isfinite(x)], dtype=np.float64)
    vb = np.array([x for x in b if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(va) == 0 or len(vb) == 0:
        return None
    d = float(va.mean() - vb.mean())
    n = min(len(va), len(vb))
    if n < 2:
        return Stat(d, None, n)
    qa, qb = va.var(ddof=1) / len(va), vb.var(ddof=1) / len(vb)
    se = math.sqrt(qa + qb)
    if se == 0:
        return Stat(d, 0.0, n)
    nu = (qa + qb) ** 2 / (qa**2 / (len(va) - 1) + qb**2 / (len(vb) - 1))
    return Stat(d, float(st.t.ppf(0.5 + LEVEL / 2, nu) * se), n)


def contrast_ci(groups: Sequence[Sequence[float | None]], weights: Sequence[float]) -> Stat | None:
    """sum_i w_i mean(groups_i) with a Welch 95% half-width (Welch-Satterthwaite degrees of
    freedom); no half-width unless every group has n >= 2; n is the smallest group's."""
    vs = [np.array([x for x in g if x is not None and math.isfinite(x)]) for g in groups]
    if any(len(v) == 0 for v in vs):
        return None
    m = float(sum(w * v.mean() for w, v in zip(weights, vs, strict=True)))
    n = min(len(v) for v in vs)
    if n < 2:
        return Stat(m, None, n)
    qs = [w * w * v.var(ddof=1) / len(v) for w, v in zip(weights, vs, strict=True)]
    se = math.sqrt(sum(qs))
    if se == 0:
        return Stat(m, 0.0, n)
    nu = sum(qs) ** 2 / sum(q * q / (len(v) - 1) for q, v in zip(qs, vs, strict=True))
    return Stat(m, float(st.t.ppf(0.5 + LEVEL / 2, nu) * se), n)


def frontier(
    l0: Sequence[float | None], y: Sequence[float | None], higher_is_better: bool
) -> tuple[list[float], list[float]]:
    """The non-dominated points of (L0, y), sorted by L0: lower L0 is better, and y is better
    higher (or lower). A point is dropped when another has L0 <= its L0 and y at least as good,
    one of the two strictly. Points with a missing value or L0 <= 0 are dropped."""
    sign = 1.0 if higher_is_better else -1.0
    pts = sorted(
        (a, b)
        for a, b in zip(l0, y, strict=True)
        if a is not None and b is not None and a > 0 and math.isfinite(b)
    )
    xs: list[float] = []
    ys: list[float] = []
    for a, b in pts:
        if xs and sign * b <= sign * ys[-1]:
            continue  # a sparser point is at least as good
        if xs and a == xs[-1]:  # same L0, better y: replaces it
            xs.pop()
            ys.pop()
        xs.append(float(a))
        ys.append(float(b))
    return xs, ys


def shared_range(ranges: Sequence[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The L0 interval every range covers; None if a range is missing or they do not overlap."""
    if not ranges or any(r is None for r in ranges):
        return None
    lo = max(r[0] for r in ranges)  # type: ignore[index]
    hi = min(r[1] for r in ranges)  # type: ignore[index]
    return (lo, hi) if 0 < lo <= hi else None


def log_targets(span: tuple[float, float] | None, n: int = 5) -> list[float]:
    """n log-spaced L0 targets from span[0] to span[1], both ends included (one target when
    the span is a point, none without a span)."""
    if span is None:
        return []
    lo, hi = span
    if math.isclose(lo, hi):
        return [float(lo)]
    return [float(p) for p in np.geomspace(lo, hi, n)]


def interp_log(l0: Sequence[float], y: Sequence[float], target: float) -> tuple[float | None, bool]:
    """(y at `target`, extrapolated?) from points (l0_i, y_i), linear in log L0.

    Points with a non-positive L0 or a missing y are dropped; with no point left, or one
    point that is not at the target, the value is None (and flagged)."""
    pts = sorted(
        (math.log(a), b)
        for a, b in zip(l0, y, strict=True)
        if a is not None and b is not None and a > 0 and math.isfinite(b)
    )
    t = math.log(target)
    if not pts:
        return None, True
    xs = [p[0] for p in pts]
    if len(pts) == 1 or xs[0] == xs[-1]:
        same = math.isclose(xs[0], t, abs_tol=1e-9)
        return (float(np.mean([p[1] for p in pts])) if same else None), not same
    if xs[0] <= t <= xs[-1]:
        return float(np.interp(t, xs, [p[1] for p in pts])), False
    (x0, y0), (x1, y1) = (pts[0], pts[1]) if t < xs[0] else (pts[-2], pts[-1])
    return float(y0 + (y1 - y0) * (t - x0) / (x1 - x0)), True


def converged(
    steps: Sequence[float], values: Sequence[float], frac: float = 0.2, tol: float = 0.05
) -> tuple[bool | None, float | None]:
    """(converged?, relative move) over the last `frac` of the steps: with v0 and v1 the
    first and last logged values at step >= (1 - frac) * last step, the move is
    |v1 - v0| / |v1|; converged if it is below `tol`. (None, None) with fewer than 2 points
    in that window."""
    pts = sorted((s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v))
    if not pts:
        return None, None
    start = (1 - frac) * pts[-1][0]
    window = [v for s, v in pts if s >= start]
    if len(window) < 2:
        return None, None
    move = abs(window[-1] - window[0]) / max(abs(window[-1]), 1e-12)
    return move < tol, move
