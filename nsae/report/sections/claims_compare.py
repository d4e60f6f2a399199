"""The claims that compare the Normalized SAE with the standard SAE at matched L0 (judge.py,
verdicts.py): less shrinkage (claim 1) and reconstruction on par (claim 5), each over the
write-up's comparison, every matched pair with the plain loss (pooled) and, apart, those with
a normalised loss."""

from __future__ import annotations

from typing import Any

from nsae.report import verdicts
from nsae.report.groups import Section, label
from nsae.report.judge import BASELINE, WRITEUP, Judgement, find, judgement, matched_rows, sae_pairs


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


def shrinkage_rows(section: Section, x: Any, y: Any) -> list[dict]:
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
        judgement(scope, [r for x, y in prs for r in shrinkage_rows(section, x, y)], counted)
        for scope, prs, counted in headline_pairs(section, sae_pairs(section))
    ]


# claim 5 ---------------------------------------------------------------------------------


def par_rows(section: Section, x: Any, y: Any) -> list[dict]:
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
        judgement(scope, [r for x, y in prs for r in par_rows(section, x, y)], counted)
        for scope, prs, counted in headline_pairs(section, sae_pairs(section))
    ]
