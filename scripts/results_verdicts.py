"""The verdict table of the published studies, generated from their report.json files (never
typed by hand).

    python scripts/results_verdicts.py           # rewrite the blocks in docs/results/README.md
    python scripts/results_verdicts.py --check   # fail if a block differs

Every judged claim and scope that the reports count (report.json's `verdicts`) becomes one
row: study, source (or "across sources: <premise> vs <flat>"), claim, scope, verdict, key
number; claims that a study cannot judge (their conditions are absent) are left out, as in
the reports' tables.
The block stands between the markers `<!-- verdicts:begin -->` and `<!-- verdicts:end -->`.
A published report rendered before the verdict table existed (no `verdicts` in its
report.json) gets one row saying so.

The second block, between `<!-- moved:begin -->` and `<!-- moved:end -->`, lists every
(study, source, claim, scope) whose verdict differs from the previous publication's: the
report.json files at git commit PREVIOUS, read with `git show`; a study first published since
then is left out of it. Where that commit cannot be read (a clone without history), --check
leaves this block alone and says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
README = RESULTS / "README.md"
BEGIN, END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"
MOVED_BEGIN, MOVED_END = "<!-- moved:begin -->", "<!-- moved:end -->"
STUDIES = ("study", "synthetic_study", "baselines")
PREVIOUS = "966998a"  # the previous publication of the studies (3 seeds, untuned)
# at PREVIOUS the one premise pair (synthetic against synthetic_flat) was "across sources"
RENAMED = {"across sources": "across sources: synthetic vs synthetic_flat"}


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def judged(record: dict) -> list[dict]:
    """The verdicts a report counts and judges."""
    return [e for e in record.get("verdicts", []) if e["counted"] and e["verdict"] != "not judged"]


def _where(e: dict) -> str:
    return e.get("where") or e.get("section") or "all"


def rows(study: str) -> list[str]:
    record = json.loads((RESULTS / study / "report.json").read_text())
    link = f"[{study}]({study}/report.md)"
    if "verdicts" not in record:
        return [f"| {link} | all | all | — | not yet re-rendered under these rules | — |"]
    return [
        _row([link, _where(e), e["claim"], e["scope"], f"**{e['verdict']}**", e["number"]])
        for e in judged(record)
    ]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def previous(study: str) -> dict | None:
    """The study's report.json at PREVIOUS: {} where it was not published then; None where
    git cannot read that commit (a clone without history)."""
    if _git("cat-file", "-e", f"{PREVIOUS}^{{commit}}").returncode != 0:
        return None
    proc = _git("show", f"{PREVIOUS}:docs/results/{study}/report.json")
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def moved(before: dict[str, dict], now: dict[str, dict]) -> list[str]:
    """One row per (study, source, claim, scope) whose verdict differs between the previous
    publication's reports and the current ones (a verdict only one of them has: "—")."""

    def index(records: dict[str, dict]) -> dict[tuple[str, ...], str]:
        return {
            (study, RENAMED.get(_where(e), _where(e)), e["claim"], e["scope"]): e["verdict"]
            for study, record in records.items()
            for e in judged(record)
        }

    old, new = index(before), index(now)
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, "—"), new.get(key, "—")
        if a != b:
            study, where, claim, scope = key
            out.append(_row([f"[{study}]({study}/report.md)", where, claim, scope, a, f"**{b}**"]))
    return out


def moved_block() -> str | None:
    before = {}
    for s in STUDIES:
        record = previous(s)
        if record is None:
            return None
        before[s] = record
    # a study first published since PREVIOUS has no verdict that moved: left out
    before = {s: record for s, record in before.items() if record}
    now = {s: json.loads((RESULTS / s / "report.json").read_text()) for s in before}
    lines = moved(before, now) or ["| — | — | no verdict moved | — | — | — |"]
    return "\n".join(
        [
            MOVED_BEGIN,
            f"| study | source | claim | scope | at {PREVIOUS} | now |",
            "|---|---|---|---|---|---|",
            *lines,
            MOVED_END,
        ]
    )


def block() -> str:
    lines = [
        BEGIN,
        "| study | source | claim | scope | verdict | key number |",
        "|---|---|---|---|---|---|",
        *(r for s in STUDIES for r in rows(s)),
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + block() + tail
    if MOVED_BEGIN in new:
        table = moved_block()
        if table is None:
            print(f"commit {PREVIOUS} is not in this clone: the moved block is left as it is")
        else:
            head, rest = new.split(MOVED_BEGIN, 1)
            new = head + table + rest.split(MOVED_END, 1)[1]
    if args.check:
        if new != text:
            print(f"{README} differs from its report.json files", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
