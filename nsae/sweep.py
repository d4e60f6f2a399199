"""How the jobs of a sweep ended (read from their run directories), and stopping a sweep
whose jobs run in worker processes (hydra/launcher=parallel): the summary line, and Ctrl-C
handled so that running jobs save their step and queued ones do not start."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from nsae.rundir import Outcome, Plan, RunDir


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
