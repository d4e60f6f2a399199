"""The report's opening: a one-paragraph summary, the verdict table (every judged claim with
its scope, rule, verdict, key number and a link to its section) and the glossary. Built from
the judgements the claim sections recorded (Ctx.verdicts), so it states nothing they do not."""

from __future__ import annotations

from typing import Any

from nsae.report.document import Block, Heading, Table, Text
from nsae.report.sections.claim_blocks import NOT_JUDGED

GLOSSARY = (
    ("standard SAE", "the ReLU SAE with unit-norm decoder columns (sae_type=none)"),
    (
        "Normalized SAE",
        "bounded tanh(ReLU) features, noise during training (sae_type=normalized_sae)",
    ),
    (
        "plain loss, loss / ||x||, loss / ||x||²",
        "the reconstruction loss divided by 1, ||x|| or ||x||² (normalization_method)",
    ),
    (
        "alpha, beta (k=…)",
        "the sparsity coefficient: one α for every layer, or β_l = α n_l^k with n_l the "
        "layer's mean ||x|| and k the exponent that makes it scale-free",
    ),
    ("scale", "the multiple of a condition's default α (coeff.scale) that draws its L0 curve"),
    ("L0, L1", "mean number of active latents per token; mean sum of latent activations"),
    (
        "matched L0",
        "conditions compared at the same L0, interpolated in log L0 along each seed's curve "
        "(its Pareto frontier for quality metrics)",
    ),
    ("explained variance", "1 − Σ||x − x̂||² / Σ||x − mean x||²"),
    (
        "reconstruction score (CE score)",
        "(CE_zero − CE_recon) / (CE_zero − CE_clean), the reconstruction spliced into the LM",
    ),
    ("KL", "mean per-token KL(P_clean ‖ P_recon) of the LM's next-token distribution"),
    ("FS", "feature suppression Σ||x̂|| / Σ||x|| (1: no shrinkage)"),
    ("RRB", "relative reconstruction bias E||x̂||² / E⟨x, x̂⟩ (1: no shrinkage)"),
    ("l0_norm_slope", "within a layer, the slope of a token's log L0 against its log ||x||"),
    ("elasticity", "across layers, the slope of log L0 against the layer's log mean ||x||"),
    ("L0 CV", "coefficient of variation of L0 across layers"),
    ("e-fold", "a factor e ≈ 2.72 of the input norm; slopes against log ||x|| are per e-fold"),
    ("excess L0", "the SAE's L0 minus the true L0 (synthetic sources)"),
    ("MCC, F1", "feature recovery against the true dictionary (synthetic sources)"),
    ("alive latents", "latents that fired in the last training tokens (1 − dead_fraction)"),
    (
        "x, y, x − y",
        "in a comparison, x is the first condition and y the reference; mean ± 95% "
        "Student-t CI over seeds (n)",
    ),
)

RULES = {
    "supported": "the data support the claim under its rule",
    "better": "a parity claim whose condition is clearly better (CI wholly on the better side)",
    "contradicted": "the data contradict the claim under its rule",
    "inconclusive": "neither: CIs too wide, too few seeds, or no L0 range in common",
}


def verdict_table(entries: list[dict[str, Any]], sections: bool) -> Table:
    rows = []
    for e in entries:
        if not e["counted"] or e["verdict"] == NOT_JUDGED:
            continue
        caveat = f" Caveat: {'; '.join(e['caveats'])}." if e["caveats"] else ""
        where = [where_of(e) or "all"] if sections else []
        rows.append(
            [
                f"[{e['claim']}](#{e['anchor']})",
                *where,
                f"**{e['verdict'].upper()}**",
                e["scope"],
                e["number"] + caveat,
                e["rule"],
            ]
        )
    head = ["claim", *(["section"] if sections else []), "verdict", "scope", "key number", "rule"]
    return Table(head, rows, anchor="verdicts")


def where_of(e: dict[str, Any]) -> str:
    """The source or section a verdict entry belongs to ("" in a one-section report)."""
    return e.get("where") or e.get("section") or ""


def per_scope(counted: list[dict[str, Any]], first: dict[str, Any]) -> str:
    """A claim judged per arm (scopes "x vs y"), as each verdict with the arms it holds for:
    "**better** against A, B; **contradicted** against C"."""
    arms: dict[str, list[str]] = {}
    for e in counted:
        if e["key"] == first["key"] and where_of(e) == where_of(first):
            y = e["scope"].split(" vs ", 1)[-1]
            arms.setdefault(e["verdict"], []).append(y.split(", ", 1)[0])
    return "; ".join(f"**{v}** against {', '.join(ys)}" for v, ys in arms.items())


def summary(entries: list[dict[str, Any]], n_runs: int, seeds: list[int]) -> Text:
    counted = [e for e in entries if e["counted"] and e["verdict"] != NOT_JUDGED]
    counts = {v: sum(e["verdict"] == v for e in counted) for v in RULES}
    head: dict[str, dict[str, dict[str, Any]]] = {}
    for e in counted:  # each claim's first scope: the write-up's comparison where it has one
        head.setdefault(where_of(e), {}).setdefault(e["key"], e)
    parts = [
        f"{n_runs} trained runs, seeds {', '.join(map(str, seeds)) or 'n/a'}. "
        f"Of {len(counted)} claims and scopes: "
        + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + ". Each claim's first scope (the write-up's own comparison where it applies; each arm "
        "for a claim judged per arm): "
    ]
    said = lambda e: per_scope(counted, e) if e.get("per_scope") else f"**{e['verdict']}**"  # noqa: E731
    if list(head) == [""]:  # one section: each claim's verdict
        parts.append("; ".join(f"{e['claim']}: {said(e)}" for e in head[""].values()) + ".")
    else:  # per claim, the sections grouped by verdict: one sentence per claim
        by_claim: dict[str, dict[str, list[str]]] = {}
        for where, firsts in head.items():
            for e in firsts.values():
                on = by_claim.setdefault(e["claim"], {}).setdefault(said(e), [])
                on.append(where.removeprefix("across sources: "))
        parts += [
            f"{claim}: " + "; ".join(f"{v} on {', '.join(ws)}" for v, ws in verdicts.items()) + "."
            for claim, verdicts in by_claim.items()
        ]
    parts.append("Each verdict follows from the rule printed beside it (table below).")
    return Text(" ".join(parts))


def build(
    entries: list[dict[str, Any]], n_runs: int, seeds: list[int], sections: bool
) -> list[Block]:
    if not entries:
        return [Text("No claim could be judged in this sweep (no comparable conditions).")]
    absent = list(dict.fromkeys(e["claim"] for e in entries if e["verdict"] == NOT_JUDGED))
    note = (
        f" Not judged in this sweep (the conditions or metrics they are about are absent): "
        f"{', '.join(absent)}."
        if absent
        else ""
    )
    return [
        Heading("Summary", 2, "summary"),
        summary(entries, n_runs, seeds),
        verdict_table(entries, sections),
        Text(
            "Verdicts: "
            + "; ".join(f"**{k}**: {v}" for k, v in RULES.items())
            + ". Scopes the write-up never proposed are in the claims' sections, not here."
            + note
        ),
    ]


def glossary() -> list[Block]:
    return [
        Heading("Glossary", 2, "glossary"),
        Table(["term", "meaning"], [list(t) for t in GLOSSARY], anchor="glossary-table"),
    ]
