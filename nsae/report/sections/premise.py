"""The premise: do high-norm tokens exist? Per layer, the input-norm distribution from
norm_stats.json, with the rule stated in the text (HIGH_NORM_RULE)."""

from __future__ import annotations

from nsae.report import plots
from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Section
from nsae.report.sections import Ctx, fmt

Q_RATIO, POS0_RATIO = 2.0, 3.0
HIGH_NORM_RULE = (
    f"High-norm tokens exist on a layer if q99/q50 >= {Q_RATIO:g} (the top 1% of tokens have "
    f"at least {Q_RATIO:g}x the median norm) or position-0 mean / rest mean >= {POS0_RATIO:g}."
)


def high_norm(
    q99: float | None, q50: float | None, pos0: float | None, rest: float | None
) -> bool | None:
    """HIGH_NORM_RULE; None when neither ratio can be computed."""
    tests = []
    if q99 is not None and q50:
        tests.append(q99 / q50 >= Q_RATIO)
    if pos0 is not None and rest:
        tests.append(pos0 / rest >= POS0_RATIO)
    return any(tests) if tests else None


def build(section: Section, ctx: Ctx) -> list[Block]:
    src = next((r for r in section.runs if r.status == "done" and r.norm_stats.get("layers")), None)
    if src is None:
        return [
            Heading("Premise: high-norm tokens", 3),
            Text("No norm_stats.json in this section."),
        ]
    rows, hists, record = [], {}, {"source": src.rel, "rule": HIGH_NORM_RULE, "layers": {}}
    for name, s in sorted(
        src.norm_stats["layers"].items(), key=lambda kv: int(kv[0].split("_")[-1])
    ):
        pos0 = (s.get("position_0") or {}).get("mean")
        rest = s.get("rest_mean")
        verdict = high_norm(s.get("q99"), s.get("q50"), pos0, rest)
        q_ratio = s["q99"] / s["q50"] if s.get("q99") is not None and s.get("q50") else None
        p_ratio = pos0 / rest if pos0 is not None and rest else None
        word = {True: "yes", False: "no", None: "n/a"}[verdict]
        rows.append(
            [
                name,
                *(fmt(s.get(k)) for k in ("q01", "q50", "q99", "max")),
                fmt(q_ratio),
                fmt(pos0),
                fmt(rest),
                fmt(p_ratio),
                word,
            ]
        )
        record["layers"][name] = {k: s.get(k) for k in ("q01", "q50", "q99", "max", "mean")} | {
            "position_0_mean": pos0,
            "rest_mean": rest,
            "q99_q50": q_ratio,
            "pos0_rest": p_ratio,
            "high_norm_tokens": verdict,
        }
        if s.get("histogram"):
            title = name.replace("_", " ")  # "layer 0"
            hists[title] = (s["histogram"]["edges"], s["histogram"]["counts"])
    ctx.record["premise"] = record
    n_yes = sum(v["high_norm_tokens"] is True for v in record["layers"].values())
    blocks: list[Block] = [
        Heading("Premise: high-norm tokens", 3),
        Text(
            f"{HIGH_NORM_RULE} Verdict: high-norm tokens on {n_yes} of {len(rows)} layers "
            f"(norm statistics of {src.rel})."
        ),
        Table(
            [
                "layer",
                "q01",
                "q50",
                "q99",
                "max",
                "q99/q50",
                "pos-0 mean",
                "rest mean",
                "pos-0/rest",
                "high-norm tokens",
            ],
            rows,
        ),
    ]
    if hists:
        blocks += ctx.figure(
            "norm_histogram",
            "input-norm histogram per layer (symlog counts)",
            lambda p: plots.histograms(hists, "input norm ||x||", p),
        )
    return blocks
