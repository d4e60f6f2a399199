"""Matched L0: a condition's runs over alpha form a curve (L0, metric) per layer and seed;
conditions are compared at common L0 targets, interpolated in log L0 (stats.interp_log).

- A quality metric (one traded against L0, QUALITY) is read off each seed's Pareto
  frontier (stats.frontier: its non-dominated points), so a curve never runs through a
  dominated point (L0 is not always monotone in alpha). Other metrics (feature suppression,
  slopes, L0 CV, dead fraction) are read off all of a seed's points sorted by L0.
- The targets of a comparison lie inside the L0 range that every seed's curve of every
  compared condition covers (`shared_targets`: five log-spaced points, both ends included),
  so no compared value is ever extrapolated. Without a shared range there is no comparison.
- A value at a target is the mean over seeds of each seed's interpolated value, with its CI
  over seeds (`Matched.stat`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nsae.report.groups import Cell
from nsae.report.stats import Stat, frontier, interp_log, log_targets, mean_ci, shared_range

QUALITY = {  # metric: higher is better
    "explained_variance": True,
    "reconstruction_score": True,
    "kl": False,
    "ce_loss_score": True,
    "kl_div_score": True,
    "cosine": True,
    "fvu": False,
    "mse": False,
}  # not MCC or F1: feature recovery peaks in L0 (no trade-off), so all its points are read
N_TARGETS = 5


@dataclass
class Matched:
    target: float
    seeds: list[float | None]  # each seed's curve at the target (seed order)
    sources: list[str]
    absent: bool = False  # no run of the curve has this metric (e.g. no splice metrics)
    extrapolated: bool = False  # the target lies outside some seed's curve

    @property
    def stat(self) -> Stat | None:
        return None if self.extrapolated else mean_ci(self.seeds)

    @property
    def value(self) -> float | None:
        s = self.stat
        return None if s is None else s.mean


def seed_ids(cells: list[Cell]) -> list[int]:
    return sorted({r.seed for c in cells for r in c.done})


def curve(
    cells: list[Cell], metric: str, layer: int | str, seed: int | None = None
) -> tuple[list[float], list[float]]:
    """Points (L0, metric) of one seed's runs, or (seed=None) of the seed means per alpha, in
    cell order; an alpha with a missing value is left out."""
    xs, ys = [], []
    for c in cells:
        runs = [r for r in c.done if seed is None or r.seed == seed]
        x = [r.value("l0", layer) for r in runs]
        y = [r.value(metric, layer) for r in runs]
        if runs and None not in x and None not in y:
            xs.append(float(np.mean(x)))  # type: ignore[arg-type]
            ys.append(float(np.mean(y)))  # type: ignore[arg-type]
    return xs, ys


def seed_curve(
    cells: list[Cell], metric: str, layer: int | str, seed: int | None
) -> tuple[list[float], list[float]]:
    """The curve a comparison reads: the Pareto frontier for a quality metric, else every
    point sorted by L0."""
    xs, ys = curve(cells, metric, layer, seed)
    if metric in QUALITY:
        return frontier(xs, ys, QUALITY[metric])
    pts = sorted((a, b) for a, b in zip(xs, ys, strict=True) if a > 0 and math.isfinite(b))
    return [p[0] for p in pts], [p[1] for p in pts]


def span(xs: list[float]) -> tuple[float, float] | None:
    return (min(xs), max(xs)) if xs else None


def shared_targets(
    conditions: list[list[Cell]], metric: str | list[str], layer: int | str, n: int = N_TARGETS
) -> list[float]:
    """n log-spaced L0 targets inside the range every seed's curve of every condition
    covers (of `metric`, or of each condition's own metric); [] if some seed has no curve
    or the ranges do not overlap."""
    metrics = [metric] * len(conditions) if isinstance(metric, str) else metric
    ranges = [
        span(seed_curve(cells, m, layer, s)[0])
        for cells, m in zip(conditions, metrics, strict=True)
        for s in seed_ids(cells) or [None]
    ]
    return log_targets(shared_range(ranges), n)


def at(
    cells: list[Cell],
    metric: str,
    layer: int | str,
    target: float,
    transform: Callable[[float], float] = lambda v: v,
) -> Matched:
    """`metric` at L0 = target on `layer` (or "mean": the layer means) for each seed,
    `transform` applied after interpolation (e.g. |1 - v| for feature suppression). A target
    outside a seed's curve (beyond float rounding) marks the value extrapolated: no stat."""
    seeds: list[float | None] = []
    extra, absent = False, True
    for s in seed_ids(cells):
        xs, ys = seed_curve(cells, metric, layer, s)
        absent = absent and not xs
        t = target
        if xs and math.isclose(t, xs[0], rel_tol=1e-9):
            t = xs[0]
        if xs and math.isclose(t, xs[-1], rel_tol=1e-9):
            t = xs[-1]
        v, e = interp_log(xs, ys, t)
        extra = extra or e
        seeds.append(None if v is None or e else transform(v))
    sources = sorted({src for c in cells for src in c.sources})
    return Matched(target, seeds, sources, absent=absent, extrapolated=extra)
