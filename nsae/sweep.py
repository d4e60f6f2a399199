"""How the jobs of a sweep ended, and stopping a sweep whose jobs run in worker processes
(hydra/launcher=parallel): the summary line, and Ctrl-C handled so that running jobs save
their step and queued ones do not start."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

OUTCOMES: list[tuple[Path, str, str | None]] = []  # this process's jobs: (dir, outcome, error)


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


def outcomes_from_dirs(plans: dict[Path, Any]) -> None:
    """Jobs that ran in other processes (hydra/launcher=parallel or slurm): read how each
    ended from its run directory, as `nsae.report` does (jobs already recorded by this
    process, a bank's, are not read again)."""
    recorded = {d for d, _, _ in OUTCOMES}
    for run_dir in plans:
        if run_dir in recorded:
            continue
        if (run_dir / "failed.json").is_file():
            error = json.loads((run_dir / "failed.json").read_text()).get("error", "?")
            OUTCOMES.append((run_dir, "failed", error))
        elif (run_dir / "skipped.json").is_file():
            OUTCOMES.append((run_dir, "skipped", None))
        elif (run_dir / "metrics.json").is_file():
            OUTCOMES.append((run_dir, "finished", None))
        elif (run_dir / "checkpoints" / "last.ckpt").is_file():
            OUTCOMES.append((run_dir, "unfinished", "resumes on a re-run"))
        else:
            OUTCOMES.append((run_dir, "unfinished", "not started or stopped before training"))


def sweep_summary() -> int:
    """Print how a sweep's jobs ended; the exit code (1 if any failed)."""
    failed = [(d, e) for d, outcome, e in OUTCOMES if outcome == "failed"]
    counts = {o: sum(1 for _, out, _ in OUTCOMES if out == o) for o in ("finished", "skipped")}
    unfinished = sum(1 for _, outcome, _ in OUTCOMES if outcome == "unfinished")
    print(
        f"nsae: sweep: {counts['finished']} finished, {counts['skipped']} skipped, "
        f"{len(failed)} failed"
        + (f", {unfinished} unfinished" if unfinished else "")
        + "".join(f"\n  failed: {d} ({e})" for d, e in failed)
    )
    return 1 if failed else 0
