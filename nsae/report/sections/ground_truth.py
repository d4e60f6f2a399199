"""Ground truth (synthetic sources only): claims that need the true features, each with a
verdict computed from the data, its numbers and its figure. Rendered only for a section
whose runs carry ground-truth metrics (metrics.json's `ground_truth_by_norm_decile`).

Per run and layer, the norm bias of the SAE's sparsity is measured against the truth:
`excess_l0_norm_slope` is the least-squares slope b of e_k = a + b log n_k over the norm
deciles k that hold tokens, with e_k the decile's excess L0 (the SAE's L0 minus the true L0,
`ground_truth_by_norm_decile`) and n_k its mean input norm (`by_norm_decile`): latents per
e-fold of ||x||; 0 means the SAE adds no more spurious latents to high-norm tokens than to
low-norm ones. It is added to the run's metrics (per layer and the mean over layers) so the
matched-L0 helpers read it like any metric.

Claims within a source (judge.py's matched-L0 comparisons; verdicts.py's rules):
- `excess_l0_norm_reduced`: the Normalized SAE's slope is below the plain-loss standard
  SAE's (`verdicts.sign` on x - y).
- `recovery`: MCC and F1 of the Normalized SAE against the standard SAE, non-inferiority
  (`verdicts.non_inferior`, the rule of the `on_par` claim).
Whether the Normalized SAE *removes* the premise's effect is judged across sources, as a
difference in differences (`premise_effect.py`, every premise source against the flat one).
"""

from __future__ import annotations

import math

import numpy as np

from nsae.metrics.ground_truth import DECODER_METRICS, NO_OUTLIERS
from nsae.report import plots, verdicts
from nsae.report.document import Block, Heading, Text
from nsae.report.groups import Condition, Section, label
from nsae.report.judge import BASELINE, Judgement, find, judgement, matched_rows, pairs, sae_pairs
from nsae.report.runs import Run
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import Claim, claim_blocks
from nsae.report.sections.matched import front
from nsae.report.stats import mean_ci

SLOPE = "excess_l0_norm_slope"
GT_KEY = "ground_truth_by_norm_decile"
RECOVERY_METRICS = ("mcc", "f1")
EXCLUDED = "; outlier tokens excluded"  # a scope's words for the NO_OUTLIERS metrics


def slope(log_norm: list[float], excess: list[float]) -> float | None:
    """The least-squares slope of `excess` against `log_norm`; None with < 2 distinct x."""
    if len(log_norm) < 2 or max(log_norm) == min(log_norm):
        return None
    return float(np.polyfit(np.asarray(log_norm), np.asarray(excess), 1)[0])


def run_slopes(run: Run, suffix: str = "") -> dict[str, float | None]:
    """{"layer_<i>": excess_l0_norm_slope, "mean": the mean over layers (None if any is)},
    over all tokens, or (suffix NO_OUTLIERS) over the tokens without massive directions.
    A decile's norm: its ground-truth row's mean_norm, else by_norm_decile's."""
    assert run.summary is not None
    gt, binned = run.summary.get(GT_KEY + suffix, {}), run.summary.get("by_norm_decile", {})
    out: dict[str, float | None] = {}
    for key, rows in gt.items():
        norms = {r["bin"]: r.get("mean_norm") for r in binned.get(key, [])}
        norms |= {r["bin"]: r["mean_norm"] for r in rows if r.get("mean_norm") is not None}
        pts = [
            (math.log(norms[r["bin"]]), r["excess_l0"])
            for r in rows
            if r.get("count") and r.get("excess_l0") is not None and (norms.get(r["bin"]) or 0) > 0
        ]
        out[key] = slope([p[0] for p in pts], [p[1] for p in pts])
    vals = list(out.values())
    out["mean"] = None if not vals or None in vals else float(np.mean(vals))  # type: ignore[arg-type]
    return out


def add_slopes(runs: list[Run]) -> None:
    """Add `excess_l0_norm_slope` (and its NO_OUTLIERS twin) to the metrics of every run
    with ground-truth deciles."""
    for r in runs:
        for suffix in ("", NO_OUTLIERS):
            s = r.summary
            if s is not None and s.get(GT_KEY + suffix) and SLOPE + suffix not in s["metrics"]:
                s["metrics"][SLOPE + suffix] = run_slopes(r, suffix)


def token_sets(section: Section) -> list[tuple[str, str]]:
    """(metric suffix, scope words): all tokens, and where the source has massive
    directions, the tokens without them."""
    excluded = any(
        r.summary is not None and r.summary.get(GT_KEY + NO_OUTLIERS) for r in section.runs
    )
    return [("", "")] + ([(NO_OUTLIERS, EXCLUDED)] if excluded else [])


def random_baseline(runs: list[Run]) -> str:
    """A sentence with the MCC that random directions score (metrics.json's `mcc_random`,
    per layer; the same for every run of a source and dictionary size), or ''."""
    values: dict[str, set[float]] = {}
    for r in runs:
        per_layer = ((r.summary or {}).get("metrics") or {}).get("mcc_random") or {}
        for layer, v in per_layer.items():
            if layer != "mean" and v is not None:
                values.setdefault(layer, set()).add(round(float(v), 3))
    if not values:
        return ""
    parts = ", ".join(
        f"{k} {'/'.join(f'{v:.3f}' for v in sorted(s))}" for k, s in sorted(values.items())
    )
    return (
        f" For scale: random decoder directions score MCC {parts} against these true "
        "features (mcc_random); a learned decoder is judged by how far above that it is."
    )


def has_ground_truth(section: Section) -> bool:
    return any(r.summary is not None and r.summary.get(GT_KEY) for r in section.runs)


def standard_pairs(section: Section) -> list[tuple[Condition, Condition]]:
    """(Normalized SAE with any loss, standard SAE with the plain loss), same coeff mode."""
    return pairs(
        section,
        lambda c: c[0] == "normalized_sae",
        lambda c: c[0] == "none" and c[1] == "none",
        lambda c: (c[2],),
    )


def _reduced_rows(section: Section, x: Condition, y: Condition, suffix: str) -> list[dict]:
    what = "excess slope" + suffix.replace("_", " ")
    return [
        r
        for layer in section.layers()
        for r in matched_rows(
            section, x, y, SLOPE + suffix, layer, lambda d, _: verdicts.sign(d, -1), what=what
        )
    ]


def reduced(section: Section) -> list[Judgement]:
    """The plain-loss Normalized SAE first (counted); normalised losses apart; each on all
    tokens, then without the outlier tokens (where the source has them)."""
    add_slopes(section.runs)
    prs = sorted(standard_pairs(section), key=lambda p: p[0][1] != "none")
    return [
        judgement(
            f"{label(x)} vs {label(y)}{words}", _reduced_rows(section, x, y, suffix), x[1] == "none"
        )
        for x, y in prs
        for suffix, words in token_sets(section)
    ]


def _recovery_rows(section: Section, x: Condition, y: Condition, suffix: str) -> list[dict]:
    metrics = [m if m in DECODER_METRICS else m + suffix for m in RECOVERY_METRICS]
    return [
        r
        for metric in metrics
        for layer in section.layers()
        for r in matched_rows(
            section, x, y, metric, layer, lambda d, ref: verdicts.non_inferior(d, ref), what=metric
        )
    ]


def recovery(section: Section) -> list[Judgement]:
    """The plain-loss pair first; pairs with a normalised loss apart (not counted); each on
    all tokens, then without the outlier tokens (MCC, from the decoder alone, is the same)."""
    out = []
    n, s = find(section, ("normalized_sae", "none", "alpha", None)), find(section, BASELINE)
    prs = [p for p in dict.fromkeys([*sae_pairs(section), *standard_pairs(section)])]
    other = [p for p in prs if p[0][1] != "none" or p[1][1] != "none"]
    for suffix, words in token_sets(section):
        if n and s:
            rows = _recovery_rows(section, n, s, suffix)
            out.append(judgement(f"{label(n)} vs {label(s)}{words}", rows))
        if other:
            rows = [r for x, y in other for r in _recovery_rows(section, x, y, suffix)]
            scope = "every pair with a normalised loss (Normalized SAE vs standard SAE), pooled"
            out.append(judgement(scope + words, rows, False))
    return out


CLAIMS = (
    Claim(
        "excess_l0_norm_reduced",
        "Against the truth, the Normalized SAE adds fewer spurious latents to high-norm tokens "
        "than the standard SAE: at matched L0 its excess_l0_norm_slope is lower.",
        "x − y of excess_l0_norm_slope has a CI below 0 (sign test), per layer at matched L0; "
        "the slope is in latents per e-fold of ||x|| (per factor e ≈ 2.72 of the norm).",
        reduced,
        ["gt_excess_l0_by_decile", "gt_excess_l0_norm_slope"],
        "fewer spurious latents on high-norm tokens",
        short_rule="x − y of excess_l0_norm_slope with a CI below 0 (sign test).",
    ),
    Claim(
        "recovery",
        "At matched L0, the Normalized SAE recovers the true features at least as well as the "
        "standard SAE.",
        "Non-inferiority of x − y in MCC and F1: CI above "
        f"−{verdicts.PAR_MARGIN:.0%} of y; better if wholly above 0 (the rule of on_par).",
        recovery,
        ["gt_pareto_mcc", "gt_pareto_f1"],
        "recovers the true features on par",
        short_rule=f"non-inferiority of MCC and F1: CI of x − y above −{verdicts.PAR_MARGIN:.0%} "
        "of y; better if wholly above 0.",
    ),
)


def _decile_series(runs: list[Run], layer: int) -> tuple[list, list, list]:
    """(mean norm, excess L0 mean, CI half) per decile over a cell's seeds (its runs)."""
    key = f"layer_{layer}"
    by_bin: dict[int, tuple[list, list]] = {}
    for r in runs:
        gt = {row["bin"]: row for row in (r.summary or {}).get(GT_KEY, {}).get(key, [])}
        for row in (r.summary or {}).get("by_norm_decile", {}).get(key, []):
            e = gt.get(row["bin"], {}).get("excess_l0")
            if row.get("count") and e is not None and row.get("mean_norm"):
                by_bin.setdefault(row["bin"], ([], []))[0].append(row["mean_norm"])
                by_bin[row["bin"]][1].append(e)
    xs, ys, hs = [], [], []
    for _, (norms, excess) in sorted(by_bin.items()):
        s = mean_ci(excess)
        xs.append(float(np.mean(norms)))
        ys.append(s.mean if s else math.nan)
        hs.append(s.half if s else None)
    return xs, ys, hs


def figures(section: Section, ctx: Ctx) -> None:
    layers, cells = section.layers(), section.cells
    reps = {label(c): section.representative(c) for c in section.cells}
    decile = {
        f"layer {layer}": {n: _decile_series(c.done, layer) for n, c in reps.items() if c}
        for layer in layers
    }
    xlabel = "decile mean ||x|| (log)"
    ctx.figure(
        "gt_excess_l0_by_decile",
        "",
        lambda p: plots.panels(decile, xlabel, "excess L0", p, logx=True, hline=0),
    )
    for metric, name, hline, ylabel in (
        (SLOPE, "gt_excess_l0_norm_slope", 0.0, "excess L0 slope (latents per e-fold)"),
        ("mcc", "gt_pareto_mcc", None, "MCC"),
        ("f1", "gt_pareto_f1", None, "F1"),
    ):
        data = {
            f"layer {layer}": {label(c): front(cs, metric, layer) for c, cs in cells.items()}
            for layer in layers
        }
        ctx.figure(
            name,
            "",
            lambda p, m=ylabel, d=data, h=hline: plots.panels(
                d, "L0 (log)", m, p, logx=True, hline=h
            ),
        )


def build(section: Section, ctx: Ctx) -> list[Block]:
    """The "Ground truth" section: [] unless the section's runs carry ground-truth metrics."""
    if not has_ground_truth(section):
        return []
    add_slopes(section.runs)
    figures(section, ctx)
    blocks: list[Block] = [
        Heading("Ground truth", 3),
        Text(
            "Synthetic source: the true features are known. Numbers are mean ± 95% CI over "
            "seeds (n) at matched L0; excess L0 = the SAE's L0 minus the true L0 per token. "
            "Figures: excess L0 per norm decile at each condition's default alpha (scale 1), "
            "and excess_l0_norm_slope, MCC and F1 against L0." + random_baseline(section.runs)
        ),
    ]
    return blocks + claim_blocks(CLAIMS, section, ctx, "ground_truth")
