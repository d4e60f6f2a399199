"""Judging a claim: comparisons at matched L0 (rows), grouped into judgements (one per scope,
e.g. "the write-up's configuration against the baseline"), each with a verdict from
verdicts.py, a key number, caveats (alive latents) and the rows it rests on. The Claims and
Ground truth sections and the verdict table all read these records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nsae.report import verdicts
from nsae.report.groups import Cell, Condition, Section, label
from nsae.report.matched import N_TARGETS, at, shared_targets
from nsae.report.stats import Stat, diff_ci

Rule = Callable[[Stat | None, float], str]  # (difference x - y, reference y) -> verdict
WRITEUP: Condition = ("normalized_sae", "none", "beta", None)  # the write-up's configuration
BASELINE: Condition = ("none", "none", "alpha", None)  # the standard SAE as usually trained
ALIVE_CAVEAT = 0.9  # a caveat names alive fractions below this


@dataclass
class Judgement:
    """One scope of a claim: its verdict over `rows` (each a comparison dict)."""

    scope: str
    verdict: str
    rows: list[dict[str, Any]]
    counted: bool = True  # False: shown apart (conditions the write-up never proposed)
    caveats: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The number that best sums it up: among the comparisons with numbers whose verdict
        is the scope's (else all of them), the middle target of the middle layer."""
        rows = [r for r in self.rows if r.get("key")]
        agree = [r for r in rows if r["verdict"] == self.verdict] or rows
        if not agree:
            return "no comparison within the data"
        layers = sorted({str(r["layer"]) for r in agree})
        mid = [r for r in agree if str(r["layer"]) == layers[len(layers) // 2]]
        return mid[len(mid) // 2]["key"]


def find(section: Section, cond: Condition) -> Condition | None:
    """The section's condition with cond's arm, loss and coefficient mode (any k), if it has
    finished runs."""
    for c, cells in section.cells.items():
        if c[:3] == cond[:3] and any(x.done for x in cells):
            return c
    return None


def pairs(
    section: Section,
    x_ok: Callable[[Condition], bool],
    y_ok: Callable[[Condition], bool],
    key: Callable[[Condition], tuple],
) -> list[tuple[Condition, Condition]]:
    """(x, y) condition pairs with numbers, x_ok(x), y_ok(y) and equal key(x) == key(y)."""
    conds = [c for c, cells in section.cells.items() if any(x.done for x in cells)]
    return [(x, y) for x in conds for y in conds if x_ok(x) and y_ok(y) and key(x) == key(y)]


def sae_pairs(section: Section) -> list[tuple[Condition, Condition]]:
    """(Normalized SAE, standard SAE) with the same loss and coefficient mode."""
    return pairs(
        section, lambda c: c[0] == "normalized_sae", lambda c: c[0] == "none", lambda c: c[1:3]
    )


def matched_rows(
    section: Section,
    x: Condition,
    y: Condition,
    metric: str,
    layer: int | str,
    rule: Rule,
    transform: Callable[[float], float] = lambda v: v,
    what: str | None = None,
) -> list[dict[str, Any]]:
    """x - y of `metric` (after `transform`) at the pair's shared L0 targets on one layer,
    each with its verdict; one inconclusive row without numbers where the two share no L0
    range (every seed's curve of both); [] where the metric was not computed."""
    cx, cy = section.cells[x], section.cells[y]
    base = {"pair": f"{label(x)} vs {label(y)}", "layer": layer, "metric": what or metric}
    tgts = shared_targets([cx, cy], metric, layer)
    if not tgts:
        if at(cx, metric, layer, 1.0).absent or at(cy, metric, layer, 1.0).absent:
            return []
        return [
            {
                **base,
                "target": None,
                "x": None,
                "y": None,
                "diff": None,
                "verdict": verdicts.INCONCLUSIVE,
                "note": "no L0 range shared by every seed of both",
                "sources": [],
            }
        ]
    out = []
    for t in tgts:
        mx, my = at(cx, metric, layer, t, transform), at(cy, metric, layer, t, transform)
        d = None if mx.extrapolated or my.extrapolated else diff_ci(mx.seeds, my.seeds)
        ref = my.value if my.value is not None else 0.0
        ax, ay = alive(cx, layer, t), alive(cy, layer, t)
        out.append(
            {
                **base,
                "target": t,
                "x": mx.stat,
                "y": my.stat,
                "diff": d,
                "alive_x": ax,
                "alive_y": ay,
                "verdict": rule(d, ref),
                "key": f"{base['metric']}: x − y = {fmt(d)} at L0 {t:.3g}"
                + ("" if layer == "mean" else f", layer {layer}"),
                "sources": sorted(set(mx.sources) | set(my.sources)),
            }
        )
    return out


def alive(cells: list[Cell], layer: int | str, target: float) -> Stat | None:
    """The fraction of latents alive (1 - dead_fraction) at L0 = target."""
    return at(cells, "dead_fraction", layer, target, lambda v: 1 - v).stat


def caveats(rows: list[dict[str, Any]]) -> list[str]:
    """The fewest alive latents on each side (x, y) where below ALIVE_CAVEAT, and a narrow
    shared L0 range (fewer than five targets for some pair, layer and metric)."""
    out = []
    groups: dict[tuple, set] = {}
    for r in rows:
        if r.get("target") is not None and r.get("x") is not None and r.get("y") is not None:
            groups.setdefault((r["pair"], str(r["layer"]), r.get("metric")), set()).add(r["target"])
    if any(len(t) < N_TARGETS for t in groups.values()):
        out.append(f"some comparisons rest on fewer than {N_TARGETS} L0 targets (narrow range)")
    for side in ("x", "y"):
        vals = [r[f"alive_{side}"].mean for r in rows if r.get(f"alive_{side}") is not None]
        if vals and min(vals) < ALIVE_CAVEAT:
            out.append(f"as few as {min(vals):.0%} of latents alive ({side})")
    return out


def judgement(scope: str, rows: list[dict[str, Any]], counted: bool = True) -> Judgement:
    """The scope's verdict: verdicts.combine over each metric's rows, then over the metrics
    strictly (a claim on two metrics, e.g. the reconstruction score and KL, is contradicted
    when either is, supported only when both are)."""
    metrics = dict.fromkeys(r.get("metric") for r in rows)
    per_metric = [
        verdicts.combine(r["verdict"] for r in rows if r.get("metric") == m) for m in metrics
    ]
    return Judgement(
        scope,
        verdicts.combine(per_metric, strict=True),
        rows,
        counted,
        caveats(rows),
    )


def fmt(s: Stat | None) -> str:
    return "n/a" if s is None else s.text()


def as_json(j: Judgement) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, Stat):
            return v.as_dict()
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return {
        "scope": j.scope,
        "verdict": j.verdict,
        "counted": j.counted,
        "key": j.key,
        "caveats": j.caveats,
        "comparisons": [{k: conv(v) for k, v in r.items()} for r in j.rows],
    }
