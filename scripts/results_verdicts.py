"""The verdict table of the published studies, generated from their report.json files (never
typed by hand).

    python scripts/results_verdicts.py           # rewrite the block in docs/results/README.md
    python scripts/results_verdicts.py --check   # fail if the block differs

Every judged claim and scope that the reports count (report.json's `verdicts`) becomes one
row: study, source (or "across sources"), claim, scope, verdict, key number; claims that a
study cannot judge (their conditions are absent) are left out, as in the reports' tables.
The block stands between the markers `<!-- verdicts:begin -->` and `<!-- verdicts:end -->`.
A published report rendered before the verdict table existed (no `verdicts` in its
report.json) gets one row saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
README = RESULTS / "README.md"
BEGIN, END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"
STUDIES = ("study", "synthetic_study")


def rows(study: str) -> list[str]:
    record = json.loads((RESULTS / study / "report.json").read_text())
    link = f"[{study}]({study}/report.md)"
    if "verdicts" not in record:
        return [f"| {link} | all | all | — | not yet re-rendered under these rules | — |"]
    out = []
    for e in record["verdicts"]:
        if not e["counted"] or e["verdict"] == "not judged":
            continue
        where = e.get("where") or e.get("section") or "all"
        cells = [link, where, e["claim"], e["scope"], f"**{e['verdict']}**", e["number"]]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


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
    if args.check:
        if new != text:
            print(f"{README} differs from its report.json files", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
