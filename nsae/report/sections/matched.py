"""Matched L0 per layer: every condition's curve (over alpha, seed-averaged) interpolated in
log L0 at common targets; a value outside a curve's L0 range is extrapolated and flagged
(never dropped wholesale). With the Pareto figures (metric against L0, per layer)."""

from __future__ import annotations

from nsae.report import plots
from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Cell, Condition, Section, label
from nsae.report.matched import at, curve, l0_range
from nsae.report.sections import Ctx, fmt_stat
from nsae.report.stats import targets

METRICS = {
    "explained_variance": "explained variance",
    "feature_suppression": "feature suppression",
    "reconstruction_score": "reconstruction score",
    "kl": "KL",
}
FLAG = " †"  # extrapolated


def curves(section: Section) -> dict[Condition, list[Cell]]:
    return {c: cells for c, cells in section.cells.items() if any(x.done for x in cells)}


def layer_targets(cs: dict[Condition, list[Cell]], layer: int | str) -> tuple[list[float], bool]:
    """Targets over the curves with two or more L0 values (single points are then flagged
    wherever a target is not theirs); over the single points if there is no curve."""
    ranges = [r for r in (l0_range(cells, layer) for cells in cs.values()) if r is not None]
    spans = [r for r in ranges if r[1] > r[0]]
    return targets(spans or ranges)


def pareto_figures(section: Section, ctx: Ctx) -> list[Block]:
    cs = curves(section)
    blocks: list[Block] = []
    for metric, name in METRICS.items():
        data = {
            f"layer {layer}": {label(c): curve(cells, metric, layer) for c, cells in cs.items()}
            for layer in section.layers()
        }
        if not any(pts[0] for series in data.values() for pts in series.values()):
            continue
        blocks += ctx.figure(
            f"pareto_{metric}",
            f"Pareto: {name} against L0 per layer",
            lambda p, d=data, n=name: plots.panels(d, "L0 (log)", n, p, logx=True),
        )
    return blocks


def build(section: Section, ctx: Ctx) -> list[Block]:
    cs = curves(section)
    rows, record = [], {}
    for layer in section.layers():
        tgts, overlap = layer_targets(cs, layer)
        rec = record[f"layer_{layer}"] = {"targets": tgts, "overlap": overlap, "values": []}
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
                    flag = FLAG if m.extrapolated else ""
                    row.append("absent" if m.absent else fmt_stat(m.stat) + flag)
                rows.append(row)
    ctx.record["matched_l0"] = record
    blocks: list[Block] = [
        Heading("Matched L0", 3),
        Text(
            "Per layer, each condition's runs over alpha form a curve (L0, metric); values "
            "are interpolated linearly in log L0 at three L0 targets log-spaced over the L0 "
            "range all curves share (where they share none, between the smallest and largest "
            "curve midpoint). † marks a value extrapolated beyond a curve's (or one seed's) "
            "L0 range: read it with care. CIs come from each seed's own curve."
        ),
    ]
    if rows:
        blocks.append(Table(["layer", "L0", "condition", *METRICS.values()], rows))
    return blocks + pareto_figures(section, ctx)
