"""The jobs of a sweep: axes that apply to some jobs only (hydra/sweeper=nsae), how the jobs
ended (read from their run directories), and stopping a sweep whose jobs run in worker
processes (hydra/launcher=parallel): the summary line, and Ctrl-C handled so that running
jobs save their step and queued ones do not start."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nsae.errors import NsaeError
from nsae.rundir import Outcome, Plan, RunDir


def restrict_axes(jobs: list[list[str]], only: Mapping[str, Any]) -> list[list[str]]:
    """The jobs of a cartesian product (each a list of `key=value` overrides) with each axis
    of `only` kept only in the jobs that meet its condition: a list of overrides a job must
    all have, or a list of such lists (any one of them). In every other job the axis'
    override is dropped, and the jobs that thereby become equal run once (the first, in the
    product's order)."""
    conditions = {axis: _condition(axis, cond) for axis, cond in only.items()}
    keys = {o.split("=", 1)[0].lstrip("+~") for job in jobs for o in job}
    unknown = sorted(set(conditions) - keys)
    if jobs and unknown:
        raise NsaeError(
            f"hydra.sweeper.only names {unknown[0]!r}, which the sweep does not set; valid: "
            + ", ".join(sorted(keys))
        )
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        kept = [o for o in job if _applies(o, job, conditions)]
        if tuple(kept) not in seen:
            seen.add(tuple(kept))
            out.append(kept)
    return out


def restricted_notes(task: Sequence[str], only: Mapping[str, Any]) -> list[str]:
    """A note for each command-line override of a key that `only` restricts: the value
    reaches only the jobs that meet the condition (e.g. `trainer.max_steps=2000` on a
    study preset reaches only its doubling-check jobs), which a user may not expect."""
    notes = []
    for override in task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in only and "," not in override.split("=", 1)[-1]:  # one value, not an axis
            when = " or ".join(" ".join(sorted(alt)) for alt in _condition(key, only[key]))
            notes.append(
                f"nsae: note: {override} reaches only the jobs with {when} (the preset's "
                f"hydra.sweeper.only.{key}); the others keep the preset's value"
            )
    return notes


def _condition(axis: str, cond: Any) -> list[set[str]]:
    """`only`'s condition as alternatives, each a set of overrides."""
    cond = [cond] if isinstance(cond, str) else list(cond)
    alternatives = [cond] if all(isinstance(c, str) for c in cond) else [list(c) for c in cond]
    for alt in alternatives:
        bad = [c for c in alt if not isinstance(c, str) or "=" not in c]
        if bad or not alt:
            raise NsaeError(
                f"hydra.sweeper.only.{axis}: {bad[0] if bad else alt!r} is not an override; "
                "valid: a list of key=value overrides a job must have for the axis to apply "
                "(e.g. [sae_type=normalized_sae]), or a list of such lists (any one)"
            )
    return [set(alt) for alt in alternatives]


def _applies(override: str, job: Sequence[str], conditions: dict[str, list[set[str]]]) -> bool:
    alternatives = conditions.get(override.split("=", 1)[0].lstrip("+~"))
    return alternatives is None or any(alt <= set(job) for alt in alternatives)


def stop_marker(sweep_pid: int | str) -> Path:
    """The file that tells a sweep's queued jobs (in worker processes) not to start."""
    return Path(tempfile.gettempdir()) / f"nsae-sweep-{sweep_pid}.stop"


def sweep_stop_requested() -> bool:
    """In a worker of a parallel sweep: has the sweep's process been told to stop?"""
    pid = os.environ.get("NSAE_SWEEP_PID")
    return bool(pid) and stop_marker(pid).exists()


def let_workers_stop(signum: int, _frame: Any) -> None:
    """The sweep's own process under hydra/launcher=parallel: Ctrl-C reaches every worker,
    and each running job saves its current step; this process waits for them. A second
    Ctrl-C aborts at once."""
    print("nsae: stopping: each running job saves its step (Ctrl-C again: abort)", file=sys.stderr)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop_marker(os.getpid()).touch()  # the jobs still queued see it and do not start


def outcomes(plans: dict[Path, Plan]) -> list[tuple[Path, Outcome, str | None]]:
    """How each job of a sweep ended, read from its run directory (wherever it ran: in
    this process, a worker, a thread or a Slurm job); a job found finished before the sweep
    started (plan "skip") counts as skipped."""
    found = []
    for run_dir, plan in plans.items():
        outcome, why = RunDir(run_dir).outcome()
        found.append((run_dir, "skipped" if plan == "skip" else outcome, why))
    return found


def sweep_summary(ended: list[tuple[Path, Outcome, str | None]]) -> int:
    """Print how a sweep's jobs ended; the exit code (1 if any failed)."""
    failed = [(d, e) for d, outcome, e in ended if outcome == "failed"]
    counts = {o: sum(1 for _, out, _ in ended if out == o) for o in ("finished", "skipped")}
    unfinished = sum(1 for _, outcome, _ in ended if outcome == "unfinished")
    print(
        f"nsae: sweep: {counts['finished']} finished, {counts['skipped']} skipped, "
        f"{len(failed)} failed"
        + (f", {unfinished} unfinished" if unfinished else "")
        + "".join(f"\n  failed: {d} ({e})" for d, e in failed)
    )
    return 1 if failed else 0
