"""The claims, each with a verdict computed from the data (verdicts.py), its numbers and
its figure. Comparisons at matched L0 use each pair's own shared L0 range; extrapolated
values never count (they read 'inconclusive: extrapolated')."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nsae.report import plots, verdicts
from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Condition, Section, label
from nsae.report.matched import at, curve, l0_range
from nsae.report.sections import Ctx, fmt_stat
from nsae.report.stats import diff_ci, targets

Rule = Callable[[Any, float], str]  # (difference Stat, reference value) -> verdict


def pairs(
    section: Section,
    x_ok: Callable[[Condition], bool],
    y_ok: Callable[[Condition], bool],
    key: Callable[[Condition], tuple],
) -> list:
    """(x, y) condition pairs with numbers, x_ok(x), y_ok(y) and equal key(x) == key(y)."""
    conds = [c for c, cells in section.cells.items() if any(x.done for x in cells)]
    return [(x, y) for x in conds for y in conds if x_ok(x) and y_ok(y) and key(x) == key(y)]


def sae_pairs(section: Section) -> list:
    """(Normalized SAE, standard SAE) with the same loss and coefficient mode."""
    return pairs(
        section, lambda c: c[0] == "normalized_sae", lambda c: c[0] == "none", lambda c: c[1:3]
    )


def matched_diff(
    section: Section,
    x: Condition,
    y: Condition,
    metric: str,
    layer: int | str,
    rule: Rule,
    transform: Callable[[float], float] = lambda v: v,
) -> list[dict]:
    """x - y at the pair's shared L0 targets on one layer, with each target's verdict."""
    cx, cy = section.cells[x], section.cells[y]
    ranges = [r for r in (l0_range(cx, layer), l0_range(cy, layer)) if r is not None]
    tgts, overlap = targets(ranges)
    out = []
    for t in tgts:
        mx, my = at(cx, metric, layer, t, transform), at(cy, metric, layer, t, transform)
        if mx.absent or my.absent:
            return []  # the metric was not computed (e.g. metrics.splice=false)
        d = diff_ci(mx.seeds, my.seeds)
        extra = mx.extrapolated or my.extrapolated or not overlap
        ref = my.value if my.value is not None else 0.0
        out.append(
            {
                "pair": f"{label(x)} - {label(y)}",
                "layer": layer,
                "target": t,
                "x": mx.stat,
                "y": my.stat,
                "diff": d,
                "extrapolated": extra,
                "verdict": verdicts.INCONCLUSIVE if extra else rule(d, ref),
                "sources": sorted(set(mx.sources) | set(my.sources)),
            }
        )
    return out


def claim1(section: Section) -> list[dict]:
    rows = []
    for x, y in sae_pairs(section):
        for layer in section.layers():
            rows += matched_diff(
                section,
                x,
                y,
                "feature_suppression",
                layer,
                lambda d, _: verdicts.sign(d, -1),
                lambda v: abs(1 - v),
            )
    return rows


def claim5(section: Section) -> list[dict]:
    rows = []
    for x, y in sae_pairs(section):
        for metric in ("reconstruction_score", "kl"):
            for layer in section.layers():
                for r in matched_diff(section, x, y, metric, layer, verdicts.on_par):
                    rows.append({**r, "pair": f"{r['pair']} [{metric}]"})
    return rows


def claim3(section: Section) -> list[dict]:
    rows = []
    beta = lambda c: c[2] == "beta" and c[3] != 0  # noqa: E731 - k = 0: beta is alpha
    for x, y in pairs(section, beta, lambda c: c[2] == "alpha", lambda c: c[:2]):
        rows += matched_diff(section, x, y, "l0_cv", "mean", lambda d, _: verdicts.sign(d, -1))
    return rows


def claim2(section: Section) -> list[dict]:
    rows = []
    for coeff in ("alpha", "beta"):
        conds = {c[1]: c for c in section.cells if c[0] == "none" and c[2] == coeff}
        std = conds.get("none")
        if std is None or section.representative(std) is None:
            continue
        others = [conds[n] for n in ("input_norm", "input_norm_squared") if n in conds]
        if not others:
            continue
        cells = [section.representative(c) for c in [std, *others]]
        for layer in section.layers():
            s = [c.stat("l0_norm_slope", layer) if c else None for c in cells]
            rows.append(
                {
                    "pair": "slopes: " + ", ".join(label(c) for c in [std, *others]),
                    "layer": layer,
                    "target": None,
                    "x": s[0],
                    "y": s[1:],
                    "diff": None,
                    "extrapolated": False,
                    "verdict": verdicts.slope_removed(s[0], s[1:]),
                    "sources": sorted({src for c in cells if c for src in c.sources}),
                }
            )
    return rows


def claim4(section: Section) -> list[dict]:
    tol = verdicts.L1_L0_TOLERANCE
    rows = []
    for cond, cells in section.cells.items():
        if cond[0] != "normalized_sae":
            continue
        for cell in (c for c in cells if c.done):
            s = cell.stat("l1_l0_ratio")
            rows.append(
                {
                    "pair": f"{label(cond)} alpha={cell.alpha:.3g}",
                    "layer": "mean",
                    "target": None,
                    "x": s,
                    "y": None,
                    "diff": None,
                    "extrapolated": False,
                    "verdict": verdicts.within(s, 1 - tol, 1 + tol),
                    "sources": cell.sources,
                }
            )
    return rows


CLAIMS = (
    (
        "feature_suppression",
        "At matched L0, the Normalized SAE's feature suppression is closer "
        "to 1 than the standard SAE's (difference of |1 - FS|, CI below 0).",
        claim1,
        ["pareto_feature_suppression"],
    ),
    (
        "l0_norm_slope",
        "Within a layer, the standard SAE's L0 rises with token norm "
        "(l0_norm_slope CI above 0 with the plain loss, at the default alpha), and the "
        "normalised losses remove that (their slope's CI includes 0).",
        claim2,
        ["l0_norm_slope"],
    ),
    (
        "cross_layer_cv",
        "Across layers, beta evens out L0: lower cross-layer L0 CV than alpha "
        "at matched mean L0 (CI of beta - alpha below 0; k = 0 pairs are identical and left out).",
        claim3,
        ["l0_cv"],
    ),
    (
        "l1_l0",
        f"For the Normalized SAE, L1 is close to L0: l1/l0 within 1 ± "
        f"{verdicts.L1_L0_TOLERANCE:g} (CI inside).",
        claim4,
        ["l1_l0_ratio"],
    ),
    (
        "on_par",
        "At matched L0, the Normalized SAE's reconstruction score and KL are on par with "
        f"the standard SAE's: the difference's CI within ±{verdicts.PAR_TOLERANCE:.0%} of the "
        "standard SAE's value.",
        claim5,
        ["pareto_reconstruction_score", "pareto_kl"],
    ),
)


def figures(section: Section, ctx: Ctx) -> None:
    """The figures only claims use: slopes per layer, L0 CV and L1/L0 against mean L0."""
    reps = {label(c): section.representative(c) for c in section.cells}
    slope = {label_: ([], [], []) for label_ in reps}
    for name, cell in reps.items():
        for layer in section.layers():
            s = cell.stat("l0_norm_slope", layer) if cell else None
            if s is not None:
                for lst, v in zip(slope[name], (layer, s.mean, s.half), strict=True):
                    lst.append(v)
    if any(v[0] for v in slope.values()):
        panel = {"l0_norm_slope (default alpha)": slope}
        ctx.figure("l0_norm_slope", "", lambda p: plots.panels(panel, "layer", "slope", p, hline=0))
    for metric, hline in (("l0_cv", None), ("l1_l0_ratio", 1.0)):
        data = {label(c): curve(cells, metric, "mean") for c, cells in section.cells.items()}
        if any(v[0] for v in data.values()):
            ctx.figure(
                metric,
                "",
                lambda p, m=metric, d=data, h=hline: plots.panels(
                    {m: d}, "mean L0 (log)", m, p, logx=True, hline=h
                ),
            )


def _row(r: dict) -> list[str]:
    y = r["y"]
    ys = ", ".join(fmt_stat(s) for s in y) if isinstance(y, list) else fmt_stat(y)
    tgt = "" if r["target"] is None else f"{r['target']:.3g}"
    extra = " (extrapolated)" if r["extrapolated"] else ""
    return [
        r["pair"],
        str(r["layer"]),
        tgt,
        fmt_stat(r["x"]),
        ys,
        fmt_stat(r["diff"]),
        r["verdict"] + extra,
    ]


def _json(r: dict) -> dict:
    conv = lambda s: s.as_dict() if s is not None else None  # noqa: E731
    y = [conv(s) for s in r["y"]] if isinstance(r["y"], list) else conv(r["y"])
    return {**r, "x": conv(r["x"]), "y": y, "diff": conv(r["diff"])}


def claim_blocks(claims: list, section: Section, ctx: Ctx, record_key: str) -> list[Block]:
    """Each claim of `claims` ((key, statement, rows function, figures)) as its heading with
    the verdict, the rule and counts, the comparison table and figures; the records go to
    ctx.record[record_key]. Shared by the Claims and Ground truth sections."""
    blocks: list[Block] = []
    record = {}
    for key, statement, fn, figs in claims:
        rows = fn(section)
        verdict = verdicts.combine(verdicts.counted(rows))
        record[key] = {
            "statement": statement,
            "verdict": verdict,
            "comparisons": [_json(r) for r in rows],
        }
        counts = {
            v: sum(r["verdict"] == v for r in rows)
            for v in (verdicts.SUPPORTED, verdicts.CONTRADICTED, verdicts.INCONCLUSIVE)
        }
        blocks += [
            Heading(f"{key}: {verdict.upper()}", 4),
            Text(
                f"{statement} Verdict rule: supported if a majority of the comparisons below are "
                "supported and none is contradicted (contradicted likewise), else inconclusive; "
                "a comparison without a CI (n = 1 seed) is inconclusive, and one at an L0 that "
                "a curve (or one seed's) does not reach is listed but not counted. Comparisons: "
                + ", ".join(f"{n} {v}" for v, n in counts.items())
                + f" (of which {len(rows) - len(verdicts.counted(rows))} extrapolated, not "
                "counted)."
                + ("" if rows else " No comparable conditions (or metric) in this section.")
            ),
        ]
        if rows:
            blocks.append(
                Table(
                    ["comparison", "layer", "L0", "x", "y", "x - y", "verdict"],
                    [_row(r) for r in rows],
                )
            )
        for fig in figs:
            blocks += ctx.existing(fig, f"{key}: {fig}")
    ctx.record[record_key] = record
    return blocks


def build(section: Section, ctx: Ctx) -> list[Block]:
    figures(section, ctx)
    return [Heading("Claims", 3), *claim_blocks(CLAIMS, section, ctx, "claims")]
