"""`python -m nsae.report <sweep dir> [--wandb]`: write report.md, report.html (self-contained),
report.json and the plots (in <sweep dir>/report_files/) from the run dirs' files only."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nsae.errors import NsaeError
from nsae.report.document import (
    Block,
    Collapsed,
    Contents,
    Heading,
    Table,
    Text,
    to_html,
    to_markdown,
)
from nsae.report.groups import sections
from nsae.report.runs import Run, load_sweep
from nsae.report.sections import (
    Ctx,
    baselines,
    claims,
    convergence,
    curves,
    dictionary,
    ground_truth,
    header,
    matched,
    natural,
    premise,
    premise_effect,
    results,
    summary,
    tuning,
)
from nsae.report.tuning import is_tuning


def build(sweep_dir: Path, figures: bool = True) -> tuple[Path, Path, list[str]]:
    """Write the report (without figures: numbers only); return its paths and the one-line
    warnings about the sweep."""
    if not sweep_dir.is_dir():
        raise NsaeError(f"sweep directory not found: {sweep_dir}")
    runs = load_sweep(sweep_dir)
    problems = [(r.rel, r.problem) for r in runs if r.problem]
    if not any(r.status == "done" for r in runs):
        raise NsaeError(
            f"no finished job in {sweep_dir} (no readable metrics.json); "
            f"{len(runs)} job director{'y' if len(runs) == 1 else 'ies'} found"
        )
    out = sweep_dir / "report_files"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    top, setup, record = header.build(runs, sweep_dir, problems)
    if is_tuning(runs):  # a tuning sweep's report is its choice (experiment=nsae_tuning)
        ctx = Ctx(sweep_dir, out, "", {}, figures)
        blocks = [*top, Contents(), *tuning.build(runs, ctx), *setup, *appendix_runs(runs)]
        return write(sweep_dir, blocks, record | {"tuning": ctx.record}, problems)
    record["sections"] = []
    studied, doubled = convergence.split(runs)  # twice the steps: the doubling check only
    secs = sections(studied)
    many = len(secs) > 1
    body: list[Block] = []
    appendix: list[Block] = []
    entries: list[dict] = []
    unconverged: dict[str, dict[str, str]] = {}  # section title: its ctx.unconverged
    if many:
        body.append(
            Text(
                f"The runs differ in more than the grid axes and the seed: "
                f"{len(secs)} sections, never mixed, titled by the differing keys."
            )
        )
    for i, sec in enumerate(secs):
        ctx = Ctx(
            sweep_dir,
            out,
            f"s{i}_" if many else "",
            {
                "title": sec.title,
                "setting": {k: repr(v) for k, v in sec.setting.items()},
                "runs": sorted((r.rel for r in sec.runs), key=natural),
            },
            figures,
        )
        pareto = matched.pareto_figures(sec, ctx)
        doubling = convergence.build(sec, doubled, ctx)  # before the claims: their caveats
        first = premise.build(sec, ctx)
        results_table = results.build(sec, ctx)
        matched_table = matched.build(sec, ctx)
        claim_part = [
            *claims.build(sec, ctx),
            *baselines.build(sec, ctx),
            *ground_truth.build(sec, ctx),
        ]
        rest = doubling + curves.build(sec, ctx) + dictionary.build(sec, ctx)
        title = f"Section: {sec.title}"
        if pareto:
            pareto = [Heading("Pareto frontiers", 3, f"{ctx.prefix}pareto"), *pareto]
        body += [Heading(title, 2, f"{ctx.prefix}section"), *pareto, *first, *claim_part, *rest]
        appendix += [Heading(title, 3), *results_table, *matched_table]
        for e in ctx.verdicts:
            short = sec.setting.get("source.name", sec.title) if many else ""
            entries.append({**e, "section": sec.title if many else "", "where": str(short)})
        record["sections"].append(ctx.record)
        unconverged[sec.title] = ctx.unconverged
    pairs = premise_effect.twins(secs)
    for j, (on, off) in enumerate(pairs):
        across = Ctx(sweep_dir, out, premise_effect.prefix(on), {}, figures)
        across.unconverged = premise_effect.unconverged(on, off, unconverged)
        body += premise_effect.build(on, off, across, first=j == 0)
        entries += [{**e, "where": premise_effect.where(on, off)} for e in across.verdicts]
        names = {"premise": premise_effect.name(on), "flat": premise_effect.name(off)}
        record.setdefault("across_sources", []).append(names | across.record)
    body += premise_effect.unpaired(secs)
    seeds = record.get("seeds", [])
    n_done = sum(r.status == "done" for r in studied)
    blocks: list[Block] = [
        *top,
        *summary.build(entries, n_done, seeds, many),
        Contents(),
        *summary.glossary(),
        *body,
        *setup,
        *appendix_runs(runs, Collapsed("Per-cell results and matched-L0 tables", appendix)),
    ]
    record["verdicts"] = entries
    return write(sweep_dir, blocks, record, problems)


def appendix_runs(runs: list[Run], *before: Block) -> list[Block]:
    """The appendix: `before`, then every run directory with its status."""
    return [
        Heading("Appendix", 2, "appendix"),
        *before,
        Collapsed("Run directories", [run_table(runs)]),
    ]


def write(
    sweep_dir: Path, blocks: list[Block], record: dict, problems: list[tuple[str, str]]
) -> tuple[Path, Path, list[str]]:
    """report.md, report.html and report.json; their paths and the sweep's warnings."""
    md, page = sweep_dir / "report.md", sweep_dir / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"nsae report: {sweep_dir.name}", sweep_dir))
    (sweep_dir / "report.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return md, page, [f"{rel}: {p}" for rel, p in problems]


def run_table(runs: list[Run]) -> Table:
    rows = [[r.rel, r.status, r.problem or ""] for r in sorted(runs, key=lambda r: natural(r.rel))]
    return Table(["run directory", "status", "problem"], rows)


def check_wandb() -> None:
    """--wandb's needs, checked before anything is written: an online W&B and the
    wandb-workspaces package."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise NsaeError(
            f"W&B Reports need an online W&B (WANDB_MODE={os.environ['WANDB_MODE']}); "
            "nothing written: unset WANDB_MODE, or drop --wandb"
        )
    from nsae.checks import installed

    if not installed("wandb_workspaces"):
        raise NsaeError("--wandb needs the wandb-workspaces package: pip install wandb-workspaces")


def publish_wandb(md: Path) -> None:
    import wandb_workspaces.reports.v2 as wr

    report = wr.Report(
        project=os.environ.get("WANDB_PROJECT", "nsae"),
        title=f"nsae: {md.parent.name}",
        blocks=[wr.MarkdownBlock(text=md.read_text())],
    )
    report.save()
    print(f"W&B report: {report.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsae.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true", help="also publish as a W&B Report")
    parser.add_argument("--no-figures", action="store_true", help="numbers only, no plots")
    args = parser.parse_args(argv)
    try:
        if args.wandb and args.sweep_dir.is_dir():  # (a missing directory: build says so)
            check_wandb()
        md, page, warnings = build(args.sweep_dir, figures=not args.no_figures)
        for w in warnings:
            print(f"nsae.report: warning: {w}", file=sys.stderr)
        print(f"wrote {md} and {page}")
        if args.wandb:
            publish_wandb(md)
    except NsaeError as err:
        print(f"nsae.report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
