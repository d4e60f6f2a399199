"""The write-up's claims, each judged as the write-up states it (judge.py, verdicts.py), with
its rule, its verdict per scope, the comparisons it rests on and its figures.

Scopes: the write-up compares its configuration (the Normalized SAE, plain loss, beta:
judge.WRITEUP) with the standard SAE as usually trained (plain loss, alpha: judge.BASELINE);
that comparison comes first and heads the verdict table. Each claim adds the scopes that
test it more widely (every matched pair), and shows conditions the write-up never proposed
apart (not counted)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nsae.report import plots, verdicts
from nsae.report.document import Block, Heading, Table, Text
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
    sae_pairs,
)
from nsae.report.matched import at, curve, shared_targets
from nsae.report.runs import Run
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import Claim, claim_blocks
from nsae.report.stats import Stat

ELASTICITY = "norm_l0_elasticity"


def headline_pairs(section: Section, pooled: list) -> list[tuple[str, list, bool]]:
    """[(scope, [(x, y)], counted)]: the write-up's comparison; every matched pair with the
    plain loss, pooled; and the pairs with a normalised loss (shown apart, not counted)."""
    out = []
    w, b = find(section, WRITEUP), find(section, BASELINE)
    if w and b:
        out.append((f"{label(w)} vs {label(b)} (the write-up's comparison)", [(w, b)], True))
    plain = [p for p in pooled if p[0][1] == "none"]
    other = [p for p in pooled if p[0][1] != "none"]
    if plain:
        scope = "every matched pair with the plain loss (same coefficient mode), pooled"
        out.append((scope, plain, True))
    if other:
        out.append(("every matched pair with a normalised loss, pooled", other, False))
    return out


# claim 1 ---------------------------------------------------------------------------------


def shrink(v: float) -> float:
    """|1 - v|: how far a norm ratio (FS, RRB) is from no shrinkage."""
    return abs(1 - v)


def _shrinkage_rows(section: Section, x: Any, y: Any) -> list[dict]:
    rows = []
    for layer in section.layers():
        fs, rrb = (
            matched_rows(section, x, y, m, layer, lambda d, _: verdicts.sign(d, -1), shrink, what)
            for m, what in (
                ("feature_suppression", "|1 − FS|"),
                ("relative_reconstruction_bias", "|1 − RRB|"),
            )
        )
        by_target = {r["target"]: r for r in rrb}
        for r in fs:
            if r["target"] is None:
                rows.append(r)
                continue
            other = by_target.get(r["target"])
            if other is None:
                rows.append({**r, "verdict": verdicts.INCONCLUSIVE, "note": "RRB missing"})
                continue
            v = verdicts.agree(r["verdict"], other["verdict"])
            note = (
                ""
                if r["verdict"] == other["verdict"]
                else (f"FS {r['verdict']}, RRB {other['verdict']}")
            )
            rows.append({**r, "diff2": other["diff"], "verdict": v, "note": note})
    return rows


def claim1(section: Section) -> list[Judgement]:
    return [
        judgement(scope, [r for x, y in prs for r in _shrinkage_rows(section, x, y)], counted)
        for scope, prs, counted in headline_pairs(section, sae_pairs(section))
    ]


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


def noise_levels(section: Section) -> str:
    vals = sorted(
        {
            str(r.config.get("sae.noise_std"))
            for r in section.runs
            if r.sae_type == "normalized_sae" and r.config.get("sae.noise_std") is not None
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
            scope = f"{label(cond)}, measured at noise_std {noise_levels(section)}"
            out.append(judgement(scope, rows, cond[:3] == WRITEUP[:3]))
    return out


def _alive(dead: Stat | None) -> Stat | None:
    return None if dead is None else Stat(1 - dead.mean, dead.half, dead.n)


# claim 5 ---------------------------------------------------------------------------------


def _par_rows(section: Section, x: Any, y: Any) -> list[dict]:
    rows = []
    for metric, higher in (("reconstruction_score", True), ("kl", False)):
        for layer in section.layers():
            rows += matched_rows(
                section,
                x,
                y,
                metric,
                layer,
                lambda d, ref, h=higher: verdicts.non_inferior(d, ref, h),
                what=metric,
            )
    return rows


def claim5(section: Section) -> list[Judgement]:
    return [
        judgement(scope, [r for x, y in prs for r in _par_rows(section, x, y)], counted)
        for scope, prs, counted in headline_pairs(section, sae_pairs(section))
    ]


MATCHED = (
    "Comparisons at five log-spaced L0 targets inside the range that every seed's curve of "
    "both conditions covers (Pareto frontiers for quality metrics), per layer; no value is "
    "extrapolated."
)

CLAIMS = (
    Claim(
        "feature_suppression",
        "“Feature suppression is suppressed in the Normalized SAE”: at matched L0 its "
        "reconstructions are less shrunk than the standard SAE's.",
        "x − y of |1 − FS| and of |1 − RRB| both have a CI below 0 (sign test); where the two "
        "measures disagree the comparison is inconclusive. " + MATCHED,
        claim1,
        ["pareto_feature_suppression"],
        "less shrinkage than the standard SAE",
        short_rule="x − y of |1 − FS| and of |1 − RRB| both with a CI below 0 (sign test).",
    ),
    Claim(
        "norm_l0_across_layers",
        "“Normalizing L1 removes the correlation between input norm and L0”: across layers, "
        "the baseline's L0 rises with the layer's mean input norm and the Normalized group's "
        "does not.",
        "Per run, the elasticity of L0 in the layer's mean norm (least-squares slope of "
        "log L0 against log mean ||x|| over layers), at matched mean L0: supported if the "
        "baseline's (y) CI lies above 0 and the Normalized SAE's (x) CI lies inside ± "
        f"{verdicts.ABSENCE_MARGIN:.0%} of the baseline's elasticity (equivalence test); "
        "contradicted if either fails outright.",
        claim2,
        ["l0_norm_slope"],
        "no norm-L0 relation across layers",
        short_rule="the baseline's elasticity CI above 0, and x's inside ± "
        f"{verdicts.ABSENCE_MARGIN:.0%} of it (equivalence).",
        extra=slope_table,
    ),
    Claim(
        "cross_layer_cv",
        "β-coefficients (β_l = α n_l^k) even out L0 across layers: a lower cross-layer "
        "coefficient of variation of L0 than α at matched mean L0.",
        "x (beta) − y (alpha) of the L0 CV across layers has a CI below 0 (sign test), per "
        "SAE type; k = 0 pairs are identical and left out. " + MATCHED,
        claim3,
        ["l0_cv"],
        "beta evens out L0 across layers",
        short_rule="x (beta) − y (alpha) of the L0 CV with a CI below 0 (sign test).",
    ),
    Claim(
        "l1_l0",
        "“L1 agrees with L0 better” in the Normalized SAE: its L1 is close to its L0.",
        f"l1/l0 (mean over layers) has a CI inside 1 ± {verdicts.L1_L0_TOLERANCE:g}, per "
        "coefficient cell.",
        claim4,
        ["l1_l0_ratio"],
        "L1 close to L0",
        short_rule=f"l1/l0 CI inside 1 ± {verdicts.L1_L0_TOLERANCE:g}.",
    ),
    Claim(
        "on_par",
        "“Normalization did not have an observable negative impact on performance”: at "
        "matched L0 the Normalized SAE's reconstruction score and KL are on par with the "
        "standard SAE's.",
        "Non-inferiority: the improvement of x over y (x − y for the reconstruction score, "
        f"y − x for KL, where lower is better) has a CI above −{verdicts.PAR_MARGIN:.0%} of "
        "y; better if that CI lies wholly above 0. " + MATCHED,
        claim5,
        ["pareto_reconstruction_score", "pareto_kl"],
        "reconstruction on par",
        short_rule=f"non-inferiority: the improvement's CI above −{verdicts.PAR_MARGIN:.0%} of y; "
        "better if wholly above 0.",
    ),
)


def figures(section: Section, ctx: Ctx) -> None:
    """The figures only claims use: slopes per layer, L0 CV and L1/L0 against mean L0."""
    reps = {label(c): section.representative(c) for c in section.cells}
    slope: dict[str, tuple[list, list, list]] = {name: ([], [], []) for name in reps}
    for name, cell in reps.items():
        for layer in section.layers():
            s = cell.stat("l0_norm_slope", layer) if cell else None
            if s is not None:
                for lst, v in zip(slope[name], (layer, s.mean, s.half), strict=True):
                    lst.append(v)
    if any(v[0] for v in slope.values()):
        panel = {"l0_norm_slope at the default alpha": slope}
        ctx.figure(
            "l0_norm_slope",
            "",
            lambda p: plots.panels(
                panel, "layer", "l0_norm_slope (log L0 per log ||x||)", p, hline=0
            ),
        )
    for metric, ylabel, hline in (
        ("l0_cv", "L0 CV across layers", None),
        ("l1_l0_ratio", "L1 / L0", 1.0),
    ):
        data = {label(c): curve(cells, metric, "mean") for c, cells in section.cells.items()}
        if any(v[0] for v in data.values()):
            ctx.figure(
                metric,
                "",
                lambda p, m=ylabel, d=data, h=hline: plots.panels(
                    {m: d}, "mean L0 over layers (log)", m, p, logx=True, hline=h
                ),
            )


def build(section: Section, ctx: Ctx) -> list[Block]:
    figures(section, ctx)
    return [
        Heading("Claims", 3, f"{ctx.prefix}claims"),
        *claim_blocks(CLAIMS, section, ctx, "claims"),
    ]
