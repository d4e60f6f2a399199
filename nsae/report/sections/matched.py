"""Matched L0 per layer: every condition's value at common L0 targets (five log-spaced points
inside the range every seed of every condition covers; matched.py), and the per-layer
Pareto frontiers (each condition's non-dominated seed-mean points) of the quality metrics.
A value that would need extrapolation is shown as "—", never as a number."""

from __future__ import annotations

from nsae.report import plots
from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Cell, Condition, Section, label
from nsae.report.matched import QUALITY, at, curve, shared_targets
from nsae.report.sections import Ctx, fmt_stat
from nsae.report.stats import frontier

METRICS = {
    "explained_variance": "explained variance",
    "feature_suppression": "feature suppression",
    "reconstruction_score": "reconstruction score (CE score)",
    "kl": "KL",
}


def curves(section: Section) -> dict[Condition, list[Cell]]:
    return {c: cells for c, cells in section.cells.items() if any(x.done for x in cells)}


def front(cells: list[Cell], metric: str, layer: int) -> tuple[list[float], list[float]]:
    """The seed-mean points of a condition, reduced to their Pareto frontier for a quality
    metric."""
    xs, ys = curve(cells, metric, layer)
    return frontier(xs, ys, QUALITY[metric]) if metric in QUALITY else (xs, ys)


def pareto_figures(section: Section, ctx: Ctx) -> list[Block]:
    cs = curves(section)
    blocks: list[Block] = []
    for metric, name in METRICS.items():
        data = {
            f"layer {layer}": {label(c): front(cells, metric, layer) for c, cells in cs.items()}
            for layer in section.layers()
        }
        if not any(pts[0] for series in data.values() for pts in series.values()):
            continue
        blocks += ctx.figure(
            f"pareto_{metric}",
            f"Pareto frontiers: {name} against L0, per layer (each condition's non-dominated "
            "seed-mean points)",
            lambda p, d=data, n=name: plots.panels(d, "L0 (log)", n, p, logx=True),
        )
    return blocks


def build(section: Section, ctx: Ctx) -> list[Block]:
    """The matched-L0 table (for the appendix); the figures come from pareto_figures."""
    cs = curves(section)
    rows, record = [], {}
    for layer in section.layers():
        tgts = shared_targets(list(cs.values()), "l0", layer)
        rec = record[f"layer_{layer}"] = {"targets": tgts, "values": []}
        for t in tgts:
            for cond, cells in cs.items():
                row = [str(layer), f"{t:.3g}", label(cond)]
                for metric in METRICS:
                    m = at(cells, metric, layer, t)
                    rec["values"].append(
                        {
                            "target": t,
                            "condition": label(cond),
                            "metric": metric,
                            "value": m.value,
                            "seeds": m.seeds,
                            "extrapolated": m.extrapolated,
                            "absent": m.absent,
                            "sources": m.sources,
                        }
                    )
                    row.append(
                        "absent" if m.absent else "—" if m.stat is None else fmt_stat(m.stat)
                    )
                rows.append(row)
    ctx.record["matched_l0"] = record
    blocks: list[Block] = [
        Heading("Matched L0", 3, f"{ctx.prefix}matched-l0"),
        Text(
            "Per layer, every condition at five L0 targets log-spaced over the range that "
            "every seed of every condition covers (none where they share no range); quality "
            "metrics read off each seed's Pareto frontier, the others off all its points, "
            "linear in log L0. Mean ± 95% CI over seeds (n)."
        ),
    ]
    if rows:
        blocks.append(Table(["layer", "L0", "condition", *METRICS.values()], rows))
    return blocks
