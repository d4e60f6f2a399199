"""The premise's effect, judged across sources as a difference in differences.

A synthetic source with the premise on (heavy-tailed token norms) and its twin with it off
(`token_norm.kind: none`, every token at scale 1) differ only in the tokens' norms. The
premise's effect on a condition is its excess_l0_norm_slope on the premise source minus
its slope on the flat source, at the same L0 (targets inside the range every seed's curve
of the four compared curves covers): E_C = s_C(premise) - s_C(flat). Both are means over
independent seeds, so E_C has a Welch CI (stats.contrast_ci).

- `premise_removed`: the premise raises the plain-loss standard SAE's slope (E_S CI above 0)
  and condition C removes it: E_C inside +-20% of E_S (equivalence: `verdicts.removed`).
- `premise_reduced`: the premise raises the standard SAE's slope (E_S CI above 0) and
  |E_C| - |E_S| has a CI below 0 (`verdicts.reduced`), each effect's sign taken from its
  mean (an effect pushed the other way is not a smaller one).

Every premise source (heavy-tailed norms, lognormal only, massive directions) is judged
against the one flat source, each pair on its own; on a source with outlier tokens, also
with them excluded (the premise source's `*_no_outliers` slope against the flat source's
slope, which has no outliers to exclude)."""

from __future__ import annotations

from typing import Any

from nsae.report import verdicts
from nsae.report.document import Block, Heading, Text
from nsae.report.groups import Condition, Section, label
from nsae.report.judge import BASELINE, Judgement, alive, find, fmt, judgement
from nsae.report.matched import at, shared_targets
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import Claim, claim_blocks
from nsae.report.sections.ground_truth import SLOPE, add_slopes, has_ground_truth, token_sets
from nsae.report.stats import contrast_ci


def flat(section: Section) -> bool:
    """Every token at scale 1 and no massive directions: the premise off."""
    kinds = {r.config.get("source.token_norm.kind") for r in section.runs}
    massive = {r.config.get("source.massive.n_directions") for r in section.runs}
    return kinds == {"none"} and massive <= {None, 0}


def split(sections: list[Section]) -> tuple[list[Section], list[Section]]:
    """The ground-truth sections: (premise ones, flat ones)."""
    gt = [s for s in sections if has_ground_truth(s)]
    return [s for s in gt if not flat(s)], [s for s in gt if flat(s)]


def twins(sections: list[Section]) -> list[tuple[Section, Section]]:
    """(premise, flat) for every premise ground-truth section, when the sweep holds exactly
    one flat ground-truth section (its twin); [] otherwise."""
    on, off = split(sections)
    return [(s, off[0]) for s in on] if len(off) == 1 else []


def unpaired(sections: list[Section]) -> list[Block]:
    """A note where the sweep has premise sources but no one flat source to pair them with
    (the across-sources claims are then not judged, and the report says why)."""
    on, off = split(sections)
    n_flat = len(off)
    if n_flat == 1 or not on:
        return []
    why = "no flat source" if n_flat == 0 else f"{n_flat} flat sources (which one is the twin?)"
    return [
        heading(),
        Text(
            f"Not judged: the sweep has {why}. The premise's effect on a condition is its "
            "excess-L0 slope on a premise source minus its slope on the one flat source "
            "(`token_norm.kind: none`, no massive directions), at the same L0."
        ),
    ]


def heading() -> Heading:
    return Heading("Ground truth across sources: the premise's effect", 2, "premise-effect")


def prefix(on: Section) -> str:
    """The pair's anchor and file prefix, from the premise source's name (stable when
    sources are added)."""
    return f"x_{name(on)}_"


def name(section: Section) -> str:
    return str(section.setting.get("source.name", section.title))


def where(on: Section, off: Section) -> str:
    """The verdict table's source column for a pair."""
    return f"across sources: {name(on)} vs {name(off)}"


def unconverged(on: Section, off: Section, why: dict[str, dict[str, str]]) -> dict[str, str]:
    """Per condition label, why doubling found it not converged on either source of the
    pair (`why`: each section title's ctx.unconverged), naming the source: the caveats of
    the pair's verdicts."""
    out: dict[str, list[str]] = {}
    for sec in (on, off):
        for cond, reason in why.get(sec.title, {}).items():
            out.setdefault(cond, []).append(f"on {name(sec)}: {reason}")
    return {cond: "; ".join(reasons) for cond, reasons in out.items()}


def rows(
    on: Section, off: Section, c: Condition, s: Condition, suffix: str = ""
) -> list[dict[str, Any]]:
    """Per layer and L0 target; `suffix` NO_OUTLIERS: the premise source's slope without its
    outlier tokens (the flat source has none to leave out)."""
    out = []
    metrics = [SLOPE + suffix, SLOPE] * 2
    for layer in sorted(set(on.layers()) & set(off.layers())):
        curves = [on.cells[c], off.cells[c], on.cells[s], off.cells[s]]
        for t in shared_targets(curves, metrics, layer):
            v = [at(cells, m, layer, t).seeds for cells, m in zip(curves, metrics, strict=True)]
            e_c, e_s = contrast_ci(v[:2], [1, -1]), contrast_ci(v[2:], [1, -1])
            # |E_c| - |E_s|, each effect's sign taken from its mean: a premise that pushes
            # the slope the other way is not "less" of an effect
            sc = 1.0 if e_c is None or e_c.mean >= 0 else -1.0
            ss = 1.0 if e_s is None or e_s.mean >= 0 else -1.0
            did = contrast_ci(v, [sc, -sc, -ss, ss])
            where = f"at L0 {t:.3g}, layer {layer}"
            ax, ay = (alive(cells, layer, t) for cells in curves[::2])
            out.append(
                {
                    "pair": f"{label(c)} vs {label(s)}",
                    "layer": layer,
                    "metric": "premise effect on excess slope",
                    "target": t,
                    "x": e_c,
                    "y": e_s,
                    "diff": did,
                    "alive_x": ax,
                    "alive_y": ay,
                    "removed": verdicts.removed(e_s, e_c),
                    "reduced": verdicts.reduced(e_s, did),
                    "key_removed": f"E_x {fmt(e_c)}, E_y {fmt(e_s)} {where}",
                    "key_reduced": f"|E_x| − |E_y| = {fmt(did)} {where}",
                    "sources": sorted(
                        {src for cells in curves for x in cells for src in x.sources}
                    ),
                }
            )
    return out


def judgements(on: Section, off: Section, which: str) -> list[Judgement]:
    s = find(on, BASELINE)
    if s is None or find(off, BASELINE) is None:
        return []
    conds = [c for c in on.cells if c != s and c in off.cells]
    conds.sort(key=lambda c: (c[0] != "normalized_sae", c[1] != "none"))
    out = []
    for c in conds:  # the plain-loss Normalized SAE counts; the others are shown apart
        counted = c[0] == "normalized_sae" and c[1] == "none"
        for suffix, words in token_sets(on):
            rs = rows(on, off, c, s, suffix)
            rs = [{**r, "verdict": r[which], "key": r[f"key_{which}"]} for r in rs]
            out.append(judgement(f"{label(c)} vs {label(s)}{words}", rs, counted))
    return out


def claims(on: Section, off: Section) -> tuple[Claim, ...]:
    did = (
        "Per layer at matched L0 (targets inside the range every seed of the four curves "
        "covers), the premise's effect E = slope(premise source) − slope(flat source) of "
        "excess_l0_norm_slope (latents per e-fold of ||x||, a factor e ≈ 2.72); "
        "x: the compared condition's E, y: the plain-loss standard SAE's E, x − y column: "
        "|E_x| − |E_y| (a difference in differences), all with Welch CIs over independent "
        "seeds."
    )
    return (
        Claim(
            "premise_removed",
            "The Normalized SAE removes the norm bias: the premise (heavy-tailed token norms, "
            "or massive directions) makes the standard SAE add spurious latents to high-norm "
            "tokens, and does not make the Normalized SAE do so.",
            f"Supported if y's CI lies above 0 and x's CI inside ± "
            f"{verdicts.ABSENCE_MARGIN:.0%} of y's mean (equivalence test); contradicted if "
            f"either fails outright. {did}",
            lambda _: judgements(on, off, "removed"),
            [],
            "removes the premise's norm bias",
            short_rule="the standard SAE's premise effect E (slope on the premise source − "
            "slope on the flat one) CI above 0, and the Normalized SAE's E inside ± "
            f"{verdicts.ABSENCE_MARGIN:.0%} of it (equivalence).",
        ),
        Claim(
            "premise_reduced",
            "The weaker claim: the premise makes the standard SAE add spurious latents to "
            "high-norm tokens, and its effect on the Normalized SAE is smaller.",
            "Supported if y's CI lies above 0 and |E_x| − |E_y| (each effect's sign taken from "
            "its mean, so an effect in the other direction is not smaller) has a CI below 0 "
            "(sign test); contradicted if either fails outright (a premise that lowers the "
            f"standard SAE's slope leaves no bias to reduce). {did}",
            lambda _: judgements(on, off, "reduced"),
            [],
            "reduces the premise's norm bias",
            short_rule="the standard SAE's premise effect E CI above 0, and |E_x| − |E_y| "
            "(difference in differences of magnitudes) with a CI below 0 (sign test).",
        ),
    )


def build(on: Section, off: Section, ctx: Ctx, first: bool = True) -> list[Block]:
    """The across-sources part for one (premise, flat) pair of `twins`; `first` adds the
    part's heading."""
    add_slopes(on.runs)
    add_slopes(off.runs)
    head = heading()
    intro = Text(
        "Each premise source and the flat source differ only in the tokens' norms (and, for "
        "massive directions, the outlier tokens' features; the flat source also keeps the "
        "norm from growing across layers), so the premise's effect on a condition is the "
        "change in its excess-L0 slope from the flat source to the premise source, at the "
        "same L0 and layer."
    )
    return [
        *([head, intro] if first else []),
        Heading(f"{name(on)} against {name(off)}", 3, f"{ctx.prefix}premise-effect"),
        *claim_blocks(claims(on, off), on, ctx, "premise_effect"),
    ]
