"""The report's header: what was trained on what, from metrics.json's provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nsae.report.document import Block, Heading, Table, Text
from nsae.report.runs import Run

FIELDS = (
    ("model", "source"),
    ("data", "dataset"),
    ("hook site", "hook_site"),
    ("steps", "steps"),
    ("batch size (tokens)", "batch_size"),
    ("train tokens", "train_tokens"),
    ("unique train tokens", "unique_train_tokens"),
    ("epochs", "epochs"),
    ("nsae version", "nsae_version"),
    ("git commit", "git_commit"),
)


def _values(runs: list[Run], key: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for r in runs:
        prov = (r.summary or {}).get("provenance", {})
        v = prov.get(key, (r.summary or {}).get(key))
        if v is not None:
            seen.setdefault(repr(v), v)
    return list(seen.values())


def build(
    runs: list[Run], sweep: Path, problems: list[tuple[str, str]]
) -> tuple[list[Block], dict]:
    """Title, provenance table (each field's distinct values), run counts and problems."""
    done = [r for r in runs if r.status == "done"]
    record: dict[str, Any] = {"provenance": {}}
    rows = []
    for name, key in FIELDS:
        vals = _values(done, key)
        record["provenance"][key] = vals
        rows.append(
            [name, ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in vals) or "n/a"]
        )
    seeds = sorted({r.seed for r in done})
    record["seeds"] = seeds
    rows.append(["seeds", ", ".join(map(str, seeds)) or "n/a"])
    counts = {
        s: sum(r.status == s for r in runs)
        for s in ("done", "skipped", "failed", "unfinished", "corrupt")
    }
    record["counts"] = counts
    blocks: list[Block] = [
        Heading(f"nsae sweep report: {sweep.name}", 1),
        Text(
            f"{len(runs)} run directories: "
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + ". Conditions are compared at matched L0, not at equal alpha. Seeds of one "
            "condition are averaged: mean ± 95% Student-t CI over seeds (n seeds); with n = 1 "
            "there is no CI and every verdict that needs one is inconclusive."
        ),
        Table(["", "value"], rows),
    ]
    if problems:
        blocks += [Heading("Problems"), Table(["run dir", "problem"], [list(p) for p in problems])]
    record["problems"] = [{"run": a, "problem": b} for a, b in problems]
    return blocks, record
