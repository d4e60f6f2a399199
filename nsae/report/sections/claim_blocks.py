"""A claim and how it is shown: its heading (with the verdict of its first scope), the claim
as the write-up states it, its rule, and per scope (a `judge.Judgement`) the verdict, the key
number, caveats and the comparison table. Each judgement also becomes a row of the verdict
table (Ctx.verdicts). Shared by the Claims, Ground truth and premise-effect sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Section
from nsae.report.judge import Judgement, as_json, fmt
from nsae.report.sections import Ctx


@dataclass
class Claim:
    key: str
    statement: str  # as the write-up states it
    rule: str
    judge: Callable[[Section], list[Judgement]]
    figures: list[str]
    short: str = ""  # the claim in a few words, for the verdict table
    extra: Callable[[Section], list[Block]] | None = None  # blocks shown after its scopes
    short_rule: str = ""  # the rule in one line, for the verdict table
    per_scope: bool = False  # the summary names every scope's verdict (one scope per arm)


CAPTIONS = {
    "pareto_feature_suppression": "Feature suppression Σ||x̂|| / Σ||x|| against L0, per layer "
    "(1: no shrinkage; every seed-mean point)",
    "pareto_reconstruction_score": "Pareto frontiers: reconstruction score against L0, per layer",
    "pareto_kl": "Pareto frontiers: KL against L0, per layer (lower is better)",
    "l0_norm_slope": "Within-layer l0_norm_slope per layer, at each condition's default alpha "
    "(0: a token's L0 does not follow its norm)",
    "l0_cv": "L0 CV across layers against mean L0 (lower: more even across layers)",
    "l1_l0_ratio": "L1 / L0 against mean L0 (1: L1 equals L0)",
    "gt_excess_l0_by_decile": "Excess L0 per input-norm decile, at each condition's default alpha",
    "gt_excess_l0_norm_slope": "excess_l0_norm_slope against L0 (0: no norm bias)",
    "gt_pareto_mcc": "Pareto frontiers: MCC against L0",
    "gt_pareto_f1": "Pareto frontiers: F1 against L0",
}
MAJORITY = (
    "Verdict per scope: supported if a majority of its comparisons support it and none "
    "contradicts it (contradicted likewise), else inconclusive; better if every comparison "
    "is better; this per metric, and a scope on two metrics is contradicted when either is, "
    "supported when both support it, better when both are. A comparison without a CI (one "
    "seed) is inconclusive."
)


NOT_JUDGED = "not judged"


def _cells(r: dict, extra: bool, metric: bool) -> list[str]:
    if r.get("target") is None and r.get("x") is None:
        tgt = "—"
    else:
        tgt = "" if r.get("target") is None else f"{r['target']:.3g}"
    alive = [r.get("alive_x"), r.get("alive_y")]
    alive_txt = " / ".join("—" if a is None else f"{a.mean:.0%}" for a in alive)
    note = f" ({r['note']})" if r.get("note") else ""
    y = r.get("y")
    cells = [r["pair"], str(r["layer"])] + ([str(r.get("metric", ""))] if metric else [])
    cells += [tgt, fmt(r.get("x")), fmt(y) if y is not None else "—"]
    cells.append(fmt(r.get("diff")) if r.get("diff") is not None else "—")
    if extra:
        cells.append(fmt(r.get("diff2")) if r.get("diff2") is not None else "—")
    return [*cells, alive_txt, r["verdict"] + note]


def table(rows: list[dict]) -> Table:
    """The comparisons; with a metric column when they hold more than one metric."""
    metrics = list(dict.fromkeys(str(r.get("metric", "value")) for r in rows))
    many = len(metrics) > 1
    what = "" if many else f": {metrics[0]}"
    extra = any("diff2" in r for r in rows)
    head = ["comparison (x vs y)", "layer", *(["metric"] if many else []), "L0"]
    head += [f"x{what}", f"y{what}", "x − y"]
    if extra:
        head.append("x − y: |1 − RRB|")
    cells = [_cells(r, extra, many) for r in rows]
    return Table([*head, "alive latents x / y", "verdict"], cells)


def anchor(ctx: Ctx, key: str) -> str:
    return f"{ctx.prefix}claim-{key}"


def entry(claim: Claim, ctx: Ctx, j: Judgement, number: str) -> dict:
    """The judgement's row of the verdict table."""
    return {
        "claim": claim.short or claim.key,
        "key": claim.key,
        "scope": j.scope,
        "verdict": j.verdict,
        "number": number,
        "counted": j.counted,
        "caveats": j.caveats,
        "anchor": anchor(ctx, claim.key),
        "rule": claim.short_rule or claim.rule,
        "per_scope": claim.per_scope,
    }


def unconverged(j: Judgement, ctx: Ctx) -> list[str]:
    """A caveat per condition of the judgement's comparisons that doubling found not
    converged (sections/convergence.py)."""
    names = {n for r in j.rows for n in str(r.get("pair", "")).split(" vs ")}
    return [
        f"{n} not converged ({ctx.unconverged[n]})" for n in sorted(names & set(ctx.unconverged))
    ]


def claim_blocks(claims: tuple[Claim, ...], section: Section, ctx: Ctx, record_key: str) -> list:
    """Each claim as its heading, statement, rule, and per scope its verdict, caveats and
    comparisons; the records go to ctx.record[record_key] and each judgement to the verdict
    table (ctx.verdicts). Shared by the Claims and Ground truth sections."""
    blocks: list[Block] = []
    record = {}
    for claim in claims:
        js = [j for j in claim.judge(section) if j.rows]
        judged = [j for j in js if j.counted]
        head = judged[0].verdict if judged else NOT_JUDGED
        record[claim.key] = {
            "statement": claim.statement,
            "rule": claim.rule,
            "verdict": head,
            "judgements": [as_json(j) for j in js],
        }
        blocks += [
            Heading(f"{claim.key}: {head.upper()}", 4, anchor(ctx, claim.key)),
            Text(f"**Claim.** {claim.statement}"),
            Text(f"**Rule.** {claim.rule} {MAJORITY}"),
        ]
        if not judged:
            why = "the conditions it is about are not in this section (or lack the metric)"
            blocks.append(Text(f"Not judged: {why}."))
            ctx.verdicts.append(entry(claim, ctx, Judgement("—", NOT_JUDGED, []), why))
        for j in js:
            j.caveats += unconverged(j, ctx)
            ctx.verdicts.append(entry(claim, ctx, j, j.key))
            apart = "" if j.counted else " (shown apart: not proposed by the write-up)"
            blocks.append(Text(f"**{j.scope}**{apart}: **{j.verdict}**. Key number: {j.key}."))
            if j.caveats:
                blocks.append(Text("Caveats: " + "; ".join(j.caveats) + "."))
            if j.rows:
                blocks.append(table(j.rows))
        if claim.extra is not None:
            blocks += claim.extra(section)
        for fig in claim.figures:
            blocks += ctx.existing(fig, CAPTIONS.get(fig, fig))
    ctx.record[record_key] = record
    return blocks
