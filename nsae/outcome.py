"""How a job ended, said: `run_and_report` runs one job (`nsae.job.run`) and prints its
last word (the run directory and headline metrics) on stdout, or its error on stderr; a
sweep's failed job leaves failed.json (`record_failure`) and the sweep goes on."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nsae.errors import Interrupted, NsaeError, WorkersInterrupted, describe
from nsae.job import run
from nsae.rundir import RunDir

# a run's last word: README's headline metrics, then a synthetic source's ground truth
HEADLINE = ("l0", "explained_variance", "reconstruction_score", "kl", "mcc", "f1")
TESTING_ONLY = "nsae: note: a debug preset's run: these numbers are for testing only"


def run_and_report(
    cfg: DictConfig,
    run_dir: RunDir,
    multirun: bool,
    log_name: str,
    in_worker: bool = False,
    **run_kwargs: Any,
) -> None:
    """`run` one job and say how it ended: its headline metrics on stdout, or its error on
    stderr (a sweep goes on; a single run exits 2). The run directory records the outcome
    (`RunDir.outcome`), which the command reads at the end of a sweep. in_worker: the job
    runs apart from the command's own thread of control (`nsae.launchers.jobs_apart`), and
    an interrupted job raises WorkersInterrupted to it."""
    from nsae.cli import fail

    try:
        summary = run(cfg, run_dir, multirun=multirun, log_name=log_name, **run_kwargs)
    except Interrupted as err:  # stops the whole command, sweep included
        print(f"nsae: {err}", file=sys.stderr, flush=True)
        if in_worker:
            raise WorkersInterrupted(str(err)) from None  # to the sweep's process
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C before training (Lightning exits 1)
        if in_worker:
            raise WorkersInterrupted(f"{run_dir.path.name}: stopped before training") from None
        raise
    except Exception as err:
        if os.environ.get("NSAE_DEBUG"):
            traceback.print_exc()
        message = describe(err)
        if multirun and not os.environ.get("SUBMITIT_EXECUTOR"):
            print(f"nsae: error: {run_dir.path.name}: {message}", file=sys.stderr, flush=True)
            record_failure(run_dir, message)
            return
        fail(NsaeError(message))
        return
    finally:
        if "wandb" in sys.modules:  # one W&B run per job, closed before the next job
            sys.modules["wandb"].finish()
    if summary and not summary.get("skipped"):
        testing_only = bool(OmegaConf.select(cfg, "console.testing_only"))
        print(last_word(summary, run_dir, testing_only), flush=True)


def last_word(summary: dict[str, Any], run_dir: RunDir, testing_only: bool) -> str:
    """The end of a run: its directory and the headline metrics (means over layers)."""
    means = summary["metrics"]
    shown = "  ".join(
        f"{k}={means[k]['mean']:.4g}" for k in HEADLINE if means.get(k, {}).get("mean") is not None
    )
    return f"run dir: {run_dir.path}\n{shown}" + (f"\n{TESTING_ONLY}" if testing_only else "")


def record_failure(run_dir: RunDir, message: str) -> None:
    """failed.json for a sweep's job, also one that failed before its directory was set up
    (the sweep's summary reads it); never in a directory that holds a finished run (a job
    refused because of it), and never raising: the sweep goes on."""
    try:
        if run_dir.path.exists() and (not run_dir.path.is_dir() or run_dir.finished()):
            return
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.write(run_dir.failed, {"error": message})
    except OSError:
        pass
