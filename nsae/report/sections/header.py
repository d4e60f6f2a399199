"""The report's header: what was trained on what, from metrics.json's provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nsae.report.document import Block, Heading, Table, Text
from nsae.report.runs import Run
from nsae.rundir import RunDir

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


def wall_times(runs: list[Run]) -> dict[str, float] | None:
    """From the run directories' file times (each trained job's config.yaml, written first,
    to its metrics.json, written last): the sweep's span (the first start to the last end),
    its running time (the time in which at least one job ran: the span less the pauses
    between sittings, e.g. a sweep stopped and continued later, or the baselines' three
    commands run apart), and the sum of the jobs' own times. A job interrupted and resumed
    counts from its first start, so a pause it sat through counts as running."""
    spans = []
    for r in runs:
        start, end = RunDir(r.path).config, RunDir(r.path).metrics
        if r.status == "done" and start.is_file() and end.is_file():
            spans.append((start.stat().st_mtime, end.stat().st_mtime))
    if not spans:
        return None
    running, reach = 0.0, float("-inf")
    for s, e in sorted(spans):
        running += max(0.0, e - max(s, reach))
        reach = max(reach, e)
    return {
        "sweep_seconds": max(e for _, e in spans) - min(s for s, _ in spans),
        "running_seconds": running,
        "job_seconds_sum": sum(e - s for s, e in spans),
        "jobs": len(spans),
    }


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def build(
    runs: list[Run], sweep: Path, problems: list[tuple[str, str]]
) -> tuple[list[Block], list[Block], dict]:
    """(title and one line on the sweep; the setup: provenance table, run counts, problems;
    the record)."""
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
    wall = wall_times(runs)
    record["wall_time"] = wall
    lead = "wall time unknown"
    if wall:
        paused = wall["sweep_seconds"] - wall["running_seconds"]
        shown = _duration(wall["running_seconds"] if paused >= 60 else wall["sweep_seconds"])
        lead = f"{shown} of wall time"
        when = (
            f"{shown} running (first job's start to last job's "
            f"end, {_duration(wall['sweep_seconds'])}, less {_duration(paused)} in which no "
            "job ran)"
            if paused >= 60
            else f"{shown} for the sweep (first job's start to last job's end)"
        )
        rows.append(
            [
                "wall time",
                f"{when}; {_duration(wall['job_seconds_sum'])} summed over its "
                f"{wall['jobs']} trained jobs",
            ]
        )
    counts = {
        s: sum(r.status == s for r in runs)
        for s in ("done", "skipped", "failed", "unfinished", "corrupt")
    }
    record["counts"] = counts
    source = ", ".join(str(v) for v in record["provenance"].get("source", [])) or "n/a"
    top: list[Block] = [
        Heading(f"nsae sweep report: {sweep.name}", 1),
        Text(
            f"SAEs trained on {source}; {len(runs)} run directories ("
            + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            + f"); seeds {', '.join(map(str, seeds)) or 'n/a'}; {lead} (Setup, below). "
            "Conditions are compared at matched L0, not at equal alpha; numbers are "
            "mean ± 95% Student-t CI over seeds (n)."
        ),
    ]
    setup: list[Block] = [Heading("Setup", 2, "setup"), Table(["", "value"], rows)]
    if problems:
        setup += [
            Heading("Problems", 3),
            Table(["run dir", "problem"], [list(p) for p in problems]),
        ]
    record["problems"] = [{"run": a, "problem": b} for a, b in problems]
    return top, setup, record
