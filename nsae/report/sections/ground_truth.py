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

Claims (at each pair's shared L0 targets per layer, values interpolated in log L0; an
extrapolated comparison is inconclusive; a claim's verdict is claims.py's majority rule):
- `excess_l0_norm`: the standard SAE (sae_type=none, plain loss) has a slope CI above 0, and
  each Normalized SAE condition's slope does not rise: its CI reaches 0 or below
  (`rise_removed`; a slope that is smaller but still wholly above 0 contradicts it).
- `excess_l0_norm_reduced`: the weaker claim that the Normalized SAE's slope is below the
  standard SAE's: the CI of (Normalized - standard) wholly below 0 (`verdicts.sign`).
- `recovery`: MCC and F1 of the Normalized SAE minus the standard SAE's are at least on par:
  supported if the difference's CI lies above -1% of the standard's value, contradicted if
  it lies wholly below that (`at_least_on_par`).
"""

from __future__ import annotations

import math

import numpy as np

from nsae.report import plots, verdicts
from nsae.report.document import Block, Heading, Text
from nsae.report.groups import Condition, Section, label
from nsae.report.matched import curve
from nsae.report.runs import Run
from nsae.report.sections import Ctx
from nsae.report.sections.claims import claim_blocks, matched_diff, pairs, sae_pairs
from nsae.report.stats import Stat, mean_ci

SLOPE = "excess_l0_norm_slope"
GT_KEY = "ground_truth_by_norm_decile"
RECOVERY_METRICS = ("mcc", "f1")


def slope(log_norm: list[float], excess: list[float]) -> float | None:
    """The least-squares slope of `excess` against `log_norm`; None with < 2 distinct x."""
    if len(log_norm) < 2 or max(log_norm) == min(log_norm):
        return None
    return float(np.polyfit(np.asarray(log_norm), np.asarray(excess), 1)[0])


def run_slopes(run: Run) -> dict[str, float | None]:
    """{"layer_<i>": excess_l0_norm_slope, "mean": the mean over layers (None if any is)}."""
    assert run.summary is not None
    gt, binned = run.summary.get(GT_KEY, {}), run.summary.get("by_norm_decile", {})
    out: dict[str, float | None] = {}
    for key, rows in gt.items():
        norms = {r["bin"]: r.get("mean_norm") for r in binned.get(key, [])}
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
    """Add `excess_l0_norm_slope` to the metrics of every run with ground-truth deciles."""
    for r in runs:
        if r.summary is not None and r.summary.get(GT_KEY) and SLOPE not in r.summary["metrics"]:
            r.summary["metrics"][SLOPE] = run_slopes(r)


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


def rise_removed(standard: Stat | None, normalized: Stat | None) -> str:
    """One comparison of `excess_l0_norm`: supported if the standard SAE's slope CI is above
    0 and the Normalized SAE's reaches 0 or below; contradicted if the standard's CI is
    wholly below 0 or the Normalized SAE's wholly above 0 (it rises, if less); else (or
    without a CI) inconclusive."""
    if normalized is None or normalized.half is None:
        norm_part = verdicts.INCONCLUSIVE
    elif normalized.lo <= 0:  # type: ignore[operator]
        norm_part = verdicts.SUPPORTED
    else:
        norm_part = verdicts.CONTRADICTED
    return verdicts.combine([verdicts.sign(standard, +1), norm_part], strict=True)


def at_least_on_par(d: Stat | None, reference: float) -> str:
    """Normalized - standard at least on par: CI above -PAR_TOLERANCE * |reference|."""
    return verdicts.within(d, -verdicts.PAR_TOLERANCE * abs(reference), math.inf)


def standard_pairs(section: Section) -> list[tuple[Condition, Condition]]:
    """(Normalized SAE with any loss, standard SAE with the plain loss), same coeff mode."""
    return pairs(
        section,
        lambda c: c[0] == "normalized_sae",
        lambda c: c[0] == "none" and c[1] == "none",
        lambda c: (c[2],),
    )


def excess_rows(section: Section) -> list[dict]:
    add_slopes(section.runs)
    rows = []
    for x, y in standard_pairs(section):
        for layer in section.layers():
            for r in matched_diff(section, x, y, SLOPE, layer, lambda d, _: "n/a"):
                ok = not r["extrapolated"]
                r["verdict"] = rise_removed(r["y"], r["x"]) if ok else r["verdict"]
                rows.append(r)
    return rows


def reduced_rows(section: Section) -> list[dict]:
    add_slopes(section.runs)
    return [
        r
        for x, y in standard_pairs(section)
        for layer in section.layers()
        for r in matched_diff(section, x, y, SLOPE, layer, lambda d, _: verdicts.sign(d, -1))
    ]


def recovery_rows(section: Section) -> list[dict]:
    rows = []
    for x, y in dict.fromkeys([*sae_pairs(section), *standard_pairs(section)]):
        for metric in RECOVERY_METRICS:
            for layer in section.layers():
                for r in matched_diff(section, x, y, metric, layer, at_least_on_par):
                    rows.append({**r, "pair": f"{r['pair']} [{metric}]"})
    return rows


CLAIMS = (
    (
        "excess_l0_norm",
        "Against the truth, the standard SAE's excess L0 rises with the input norm and the "
        "Normalized SAE's does not. Per layer and shared L0 target, excess_l0_norm_slope "
        "(least-squares slope of the norm decile's excess L0 against its log mean norm): "
        "supported if the standard SAE's (x = Normalized, y = standard) CI is above 0 and the "
        "Normalized SAE's CI reaches 0 or below; contradicted if the standard's CI is below 0 "
        "or the Normalized SAE's is wholly above 0 (its excess L0 still rises, even if less: "
        "see excess_l0_norm_reduced).",
        excess_rows,
        ["gt_excess_l0_by_decile", "gt_excess_l0_norm_slope"],
    ),
    (
        "excess_l0_norm_reduced",
        "The weaker claim: at matched L0, the Normalized SAE's excess_l0_norm_slope is below "
        "the standard SAE's (plain loss): supported if the CI of x - y is wholly below 0, "
        "contradicted if wholly above 0.",
        reduced_rows,
        ["gt_excess_l0_norm_slope"],
    ),
    (
        "recovery",
        "At matched L0, the Normalized SAE recovers the true features at least as well as the "
        "standard SAE (same loss, and the plain-loss standard SAE): per layer, MCC and F1 of "
        f"x - y, supported if its CI lies above -{verdicts.PAR_TOLERANCE:.0%} of y, "
        "contradicted if it lies wholly below that.",
        recovery_rows,
        ["gt_pareto_mcc", "gt_pareto_f1"],
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
    for metric, name, hline in (
        (SLOPE, "gt_excess_l0_norm_slope", 0.0),
        ("mcc", "gt_pareto_mcc", None),
        ("f1", "gt_pareto_f1", None),
    ):
        data = {
            f"layer {layer}": {label(c): curve(cs, metric, layer) for c, cs in cells.items()}
            for layer in layers
        }
        ctx.figure(
            name,
            "",
            lambda p, m=metric, d=data, h=hline: plots.panels(d, "L0", m, p, logx=True, hline=h),
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
