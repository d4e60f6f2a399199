"""Matched L0: a condition's runs over alpha form a curve (L0, metric) per layer; values at
a common L0 are interpolated in log L0 (stats.interp_log).

The table value is the seed-averaged curve's (mean over seeds per alpha, then
interpolated); the CI comes from the seeds' own curves, each interpolated at the target.
A value is flagged `extrapolated` where the target lies outside the seed-averaged curve's
L0 range or outside any seed's range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nsae.report.groups import Cell
from nsae.report.stats import Stat, interp_log, mean_ci


@dataclass
class Matched:
    target: float
    value: float | None  # the seed-averaged curve at the target
    seeds: list[float | None]  # each seed's curve at the target (seed order)
    extrapolated: bool
    sources: list[str]
    absent: bool = False  # no run of the curve has this metric (e.g. no splice metrics)

    @property
    def stat(self) -> Stat | None:
        s = mean_ci(self.seeds)
        if s is None or self.value is None:
            return s
        return Stat(self.value, s.half, s.n)


def seed_ids(cells: list[Cell]) -> list[int]:
    return sorted({r.seed for c in cells for r in c.done})


def curve(
    cells: list[Cell], metric: str, layer: int | str, seed: int | None = None
) -> tuple[list[float], list[float]]:
    """Points (L0, metric) of one seed's runs, or (seed=None) of the seed means per alpha;
    an alpha with a missing value is left out."""
    xs, ys = [], []
    for c in cells:
        runs = [r for r in c.done if seed is None or r.seed == seed]
        x = [r.value("l0", layer) for r in runs]
        y = [r.value(metric, layer) for r in runs]
        if runs and None not in x and None not in y:
            xs.append(float(np.mean(x)))  # type: ignore[arg-type]
            ys.append(float(np.mean(y)))  # type: ignore[arg-type]
    return xs, ys


def l0_range(cells: list[Cell], layer: int | str) -> tuple[float, float] | None:
    xs, _ = curve(cells, "l0", layer)
    xs = [x for x in xs if x > 0]
    return (min(xs), max(xs)) if xs else None


def at(
    cells: list[Cell],
    metric: str,
    layer: int | str,
    target: float,
    transform: Callable[[float], float] = lambda v: v,
) -> Matched:
    """`metric` at L0 = target on `layer` (or "mean": the layer means), `transform` applied
    after interpolation (e.g. |1 - v| for feature suppression)."""
    points = curve(cells, metric, layer)
    value, extra = interp_log(*points, target)
    seeds = []
    for s in seed_ids(cells):
        v, e = interp_log(*curve(cells, metric, layer, s), target)
        seeds.append(None if v is None else transform(v))
        extra = extra or e
    sources = sorted({src for c in cells for src in c.sources})
    value = None if value is None else transform(value)
    return Matched(target, value, seeds, extra, sources, absent=not points[0])
