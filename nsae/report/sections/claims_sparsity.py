"""The claims on how L0 behaves (judge.py, verdicts.py): no norm-L0 relation across layers
(claim 2, the elasticity of L0 in the layer's mean norm, with the within-layer slope table),
beta evens out L0 across layers (claim 3, the cross-layer CV) and L1 close to L0 (claim 4)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nsae.report import verdicts
from nsae.report.document import Block, Table, Text
from nsae.report.groups import Section, label
from nsae.report.judge import (
    BASELINE,
    WRITEUP,
    Judgement,
    alive,
    find,
    fmt,
    judgement,
    matched_rows,
    pairs,
)
from nsae.report.matched import at, shared_targets
from nsae.report.runs import Run
from nsae.report.stats import Stat

ELASTICITY = "norm_l0_elasticity"


# claim 2 ---------------------------------------------------------------------------------


def elasticity(run: Run) -> float | None:
    """The least-squares slope of log L0 against log(mean ||x||) over the run's layers
    (the layer's mean norm from norm_stats.json): 0 = a layer's L0 does not follow its
    norm. None with fewer than two layers of distinct norm."""
    layers = (run.norm_stats or {}).get("layers", {})
    pts = []
    for i in run.layers():
        n, l0 = (layers.get(f"layer_{i}") or {}).get("mean"), run.value("l0", i)
        if n and l0 and n > 0 and l0 > 0:
            pts.append((math.log(n), math.log(l0)))
    if len(pts) < 2 or max(p[0] for p in pts) - min(p[0] for p in pts) < 1e-9:
        return None
    return float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0])


def add_elasticity(runs: list[Run]) -> None:
    for r in runs:
        if r.summary is not None and ELASTICITY not in r.summary["metrics"]:
            r.summary["metrics"][ELASTICITY] = {"mean": elasticity(r)}


def _removed_rows(section: Section, x: Any, y: Any) -> list[dict]:
    """x's effect removed against y's: y's CI above 0 and x's inside +-20% of y's mean."""
    rows = matched_rows(section, x, y, ELASTICITY, "mean", lambda d, _: "n/a", what="elasticity")
    for r in rows:
        if r["x"] is not None:
            r["verdict"] = verdicts.removed(r["y"], r["x"])
            r["key"] = f"x {fmt(r['x'])}, y {fmt(r['y'])} at mean L0 {r['target']:.3g}"
    return rows


def claim2(section: Section) -> list[Judgement]:
    add_elasticity(section.runs)
    out = []
    w, b = find(section, WRITEUP), find(section, BASELINE)
    if w and b:
        out.append(judgement(f"{label(w)} vs {label(b)}", _removed_rows(section, w, b)))
    others = [c for c in section.cells if c[0] == "normalized_sae" and c != w]
    control = find(section, ("none", "none", "beta", None))  # beta without the Normalized SAE
    for c in [*others, *([control] if control else [])]:
        if b and any(x.done for x in section.cells[c]):
            out.append(judgement(f"{label(c)} vs {label(b)}", _removed_rows(section, c, b), False))
    return out


def slope_table(section: Section) -> list[Block]:
    """The within-layer L0-norm slope of every condition at one matched L0 per layer (the
    middle of the range every seed of every condition covers)."""
    conds = [c for c, cells in section.cells.items() if any(x.done for x in cells)]
    rows = []
    for layer in section.layers():
        tgts = shared_targets([section.cells[c] for c in conds], "l0_norm_slope", layer)
        if not tgts:
            rows.append([str(layer), "no shared L0", "", "", ""])
            continue
        t = tgts[len(tgts) // 2]
        for c in conds:
            s = at(section.cells[c], "l0_norm_slope", layer, t).stat
            a = alive(section.cells[c], layer, t)
            rows.append([str(layer), f"{t:.3g}", label(c), fmt(s), fmt(a)])
    return [
        Text(
            "Beside it, within each layer: l0_norm_slope (the least-squares slope of a token's "
            "log L0 against its log ||x||) of every condition, at the middle of the L0 range "
            "all conditions share on that layer. 0: a token's L0 does not follow its norm."
        ),
        Table(["layer", "L0", "condition", "l0_norm_slope", "alive latents"], rows),
    ]


# claim 3 ---------------------------------------------------------------------------------


def claim3(section: Section) -> list[Judgement]:
    def beta_vs_alpha(x: Any, y: Any) -> list[dict]:
        return matched_rows(
            section, x, y, "l0_cv", "mean", lambda d, _: verdicts.sign(d, -1), what="L0 CV"
        )

    beta = lambda c: c[2] == "beta" and c[3] != 0  # noqa: E731 - k = 0: beta is alpha
    prs = pairs(section, beta, lambda c: c[2] == "alpha", lambda c: c[:2])
    # the write-up's configuration first, then each SAE type with the plain loss; the
    # normalised losses with beta were never proposed: apart, not pooled
    prs.sort(key=lambda p: (p[0][:3] != WRITEUP[:3], p[0][1] != "none", p[0][0]))
    out = []
    for x, y in prs:
        proposed = x[1] == "none"
        tag = " (the write-up's configuration)" if x[:3] == WRITEUP[:3] else ""
        out.append(judgement(f"{label(x)} vs {label(y)}{tag}", beta_vs_alpha(x, y), proposed))
    return out


# claim 4 ---------------------------------------------------------------------------------


def noise_levels(runs: list[Run]) -> str:
    """The Normalized SAE noise levels the runs were trained at (a condition's own: the
    tuned noise can differ between conditions)."""
    vals = sorted(
        {
            str(r.config.get("sae.noise_std"))
            for r in runs
            if r.config.get("sae.noise_std") is not None
        }
    )
    return ", ".join(vals) or "n/a"


def claim4(section: Section) -> list[Judgement]:
    tol = verdicts.L1_L0_TOLERANCE
    out = []
    conds = [c for c in section.cells if c[0] == "normalized_sae"]
    conds.sort(key=lambda c: c[:3] != WRITEUP[:3])
    for cond in conds:
        rows = []
        for cell in (c for c in section.cells[cond] if c.done):
            s = cell.stat("l1_l0_ratio")
            rows.append(
                {
                    "pair": f"{label(cond)}, alpha {cell.alpha:.3g}",
                    "layer": "mean",
                    "target": cell.stat("l0").mean if cell.stat("l0") else None,
                    "metric": "L1/L0",
                    "x": s,
                    "y": None,
                    "diff": None,
                    "alive_x": _alive(cell.stat("dead_fraction")),
                    "verdict": verdicts.within(s, 1 - tol, 1 + tol),
                    "key": f"L1/L0 {fmt(s)} at alpha {cell.alpha:.3g}",
                    "sources": cell.sources,
                }
            )
        if rows:
            scope = f"{label(cond)}, measured at noise_std {noise_levels(section.done(cond))}"
            out.append(judgement(scope, rows, cond[:3] == WRITEUP[:3]))
    return out


def _alive(dead: Stat | None) -> Stat | None:
    return None if dead is None else Stat(1 - dead.mean, dead.half, dead.n)
