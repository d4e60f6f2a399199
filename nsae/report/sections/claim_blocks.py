"""A claim and how it is shown: its heading (with the verdict of its first scope), the claim
as the write-up states it, its rule, and per scope (a `judge.Judgement`) the verdict, the key
number, caveats and the comparison table. Each judgement also becomes a row of the verdict
table (Ctx.verdicts). Shared by the Claims, Ground truth and premise-effect sections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nsae.report import verdicts
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


MAJORITY = (
    "Verdict per scope: supported if a majority of its comparisons support it and none "
    "contradicts it (contradicted likewise), else inconclusive; better if every comparison "
    "is better. A comparison without a CI (one seed) is inconclusive."
)


def _cells(r: dict, extra: bool) -> list[str]:
    if r.get("target") is None and r.get("x") is None:
        tgt = "—"
    else:
        tgt = "" if r.get("target") is None else f"{r['target']:.3g}"
    alive = [r.get("alive_x"), r.get("alive_y")]
    alive_txt = " / ".join("—" if a is None else f"{a.mean:.0%}" for a in alive)
    note = f" ({r['note']})" if r.get("note") else ""
    y = r.get("y")
    cells = [r["pair"], str(r["layer"]), tgt, fmt(r.get("x")), fmt(y) if y is not None else "—"]
    cells.append(fmt(r.get("diff")) if r.get("diff") is not None else "—")
    if extra:
        cells.append(fmt(r.get("diff2")) if r.get("diff2") is not None else "—")
    return [*cells, alive_txt, r["verdict"] + note]


def table(rows: list[dict]) -> Table:
    what = rows[0].get("metric", "value")
    extra = any("diff2" in r for r in rows)
    head = ["comparison (x vs y)", "layer", "L0", f"x: {what}", f"y: {what}", "x − y"]
    if extra:
        head.append("x − y: |1 − RRB|")
    return Table([*head, "alive latents x / y", "verdict"], [_cells(r, extra) for r in rows])


def anchor(ctx: Ctx, key: str) -> str:
    return f"{ctx.prefix}claim-{key}"


def claim_blocks(claims: tuple[Claim, ...], section: Section, ctx: Ctx, record_key: str) -> list:
    """Each claim as its heading, statement, rule, and per scope its verdict, caveats and
    comparisons; the records go to ctx.record[record_key] and each judgement to the verdict
    table (ctx.verdicts). Shared by the Claims and Ground truth sections."""
    blocks: list[Block] = []
    record = {}
    for claim in claims:
        js = claim.judge(section)
        head = js[0].verdict if js else verdicts.INCONCLUSIVE
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
        if not js:
            blocks.append(Text("No comparable conditions (or metric) in this section."))
        for j in js:
            ctx.verdicts.append(
                {
                    "claim": claim.short or claim.key,
                    "key": claim.key,
                    "scope": j.scope,
                    "verdict": j.verdict,
                    "number": j.key,
                    "counted": j.counted,
                    "caveats": j.caveats,
                    "anchor": anchor(ctx, claim.key),
                    "rule": claim.rule,
                }
            )
            apart = "" if j.counted else " (shown apart: not proposed by the write-up)"
            blocks.append(Text(f"**{j.scope}**{apart}: **{j.verdict}**. Key number: {j.key}."))
            if j.caveats:
                blocks.append(Text("Caveats: " + "; ".join(j.caveats) + "."))
            if j.rows:
                blocks.append(table(j.rows))
        if claim.extra is not None:
            blocks += claim.extra(section)
        for fig in claim.figures:
            blocks += ctx.existing(fig, f"{claim.key}: {fig}")
    ctx.record[record_key] = record
    return blocks
