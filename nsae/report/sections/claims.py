"""The write-up's claims, each judged as the write-up states it (judge.py, verdicts.py), with
its rule, its verdict per scope, the comparisons it rests on and its figures.

Scopes: the write-up compares its configuration (the Normalized SAE, plain loss, beta:
judge.WRITEUP) with the standard SAE as usually trained (plain loss, alpha: judge.BASELINE);
that comparison comes first and heads the verdict table. Each claim adds the scopes that
test it more widely (every matched pair), and shows conditions the write-up never proposed
apart (not counted).

The claims' numbers: claims_compare.py (against the standard SAE at matched L0) and
claims_sparsity.py (L0 across layers and against L1)."""

from __future__ import annotations

from nsae.report import plots, verdicts
from nsae.report.document import Block, Heading
from nsae.report.groups import Section, label
from nsae.report.matched import curve
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import Claim, claim_blocks
from nsae.report.sections.claims_compare import claim1, claim5
from nsae.report.sections.claims_sparsity import claim2, claim3, claim4, slope_table

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
