"""The command line of `python -m nsae.train`: argument checks before anything is written,
signals, and the exit code.

    0    every job finished (or was skipped: already finished, or equal to another job)
    1    a sweep in which some job failed (the summary names each)
    2    a bad command or a failed single run: one line, `nsae: error: ...`
    130  interrupted (Ctrl-C; SIGTERM: 143): re-run the same command to continue

A command's jobs are composed and checked first (`nsae.preflight`), without Lightning and
without loading a model. How each job of a sweep ended is read from its run directory at
the end (`nsae.sweep.outcomes`), whichever launcher ran it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from nsae.errors import NsaeError, WorkersInterrupted


def fail(err: Exception) -> None:
    print(f"nsae: error: {err}", file=sys.stderr, flush=True)
    if os.environ.get("SUBMITIT_EXECUTOR"):
        # In a submitit job an exception, not an exit, is what records the job as failed
        # (and what the launcher re-raises), also on clusters without Slurm accounting.
        raise NsaeError(str(err)) from None
    sys.exit(2)


def check_config_name(argv: list[str]) -> None:
    """`--config-name NAME` (or -cn) must name a config in conf/ (unless --config-path)."""
    from nsae.constants import CONF_DIR

    if any(a.split("=")[0] in ("--config-path", "-cp") for a in argv):
        return
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--config-name", "-cn"):
            name = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if not (CONF_DIR / f"{name}.yaml").is_file():
                names = ", ".join(sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
                raise NsaeError(f"--config-name {name}: no such config; valid: {names}")


MODES = {  # Hydra runs one of these per command
    "-m": "--multirun",
    "--multirun": "--multirun",
    "-r": "--run",
    "--run": "--run",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "-sc": "--shell-completion",
    "--shell-completion": "--shell-completion",
}


def check_modes(argv: list[str]) -> None:
    """At most one of Hydra's modes (Hydra's own refusal is a traceback)."""
    given = list(dict.fromkeys(MODES[a.split("=")[0]] for a in argv if a.split("=")[0] in MODES))
    if len(given) > 1:
        hint = (
            "; to see a sweep job's config, give --cfg job with that job's overrides "
            "(one value each, no -m)"
            if {"--multirun", "--cfg"} <= set(given)
            else ""
        )
        raise NsaeError(
            f"{' and '.join(given)} cannot be combined: a command runs one of "
            f"--multirun, --run, --cfg, --info, --shell-completion{hint}"
        )


def display(path: str) -> str:
    """A path as the user would type it: relative to the working directory when inside."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(entry: Callable[[], None]) -> None:
    """Check the command, run it through Hydra's `entry`, and exit with its code."""
    from nsae.config import check_group_choices
    from nsae.console import quiet_launcher
    from nsae.launchers import check_launcher_extra, jobs_apart
    from nsae.preflight import preflight
    from nsae.ranks import external_ranks
    from nsae.sweep import let_workers_stop, outcomes, stop_marker, sweep_summary

    argv = sys.argv[1:]
    checked = None
    try:
        check_modes(argv)
        check_config_name(argv)
        check_group_choices(argv)
        check_launcher_extra(argv)
        if not external_ranks():
            checked = preflight(argv)
    except NsaeError as err:
        fail(err)
    if checked is not None:  # Hydra runs the jobs in the very directories checked here
        key = checked.pin.split("=", 1)[0]
        kept = [a for a in argv if a.split("=", 1)[0].lstrip("+~") != key]
        sys.argv = [sys.argv[0], *kept, checked.pin]
    apart = checked is not None and jobs_apart(checked.launcher)
    if apart:  # a stopped worker's WorkersInterrupted reaches this process's except
        signal.signal(signal.SIGINT, let_workers_stop)
        os.environ["HYDRA_FULL_ERROR"] = "1"
        os.environ["NSAE_SWEEP_PID"] = str(os.getpid())
    quiet_launcher()
    try:
        try:
            entry()
        except Exception as err:
            if apart and stop_marker(os.getpid()).exists():
                # Ctrl-C hit a worker between jobs (loky: BrokenProcessPool): stopped all the same
                raise WorkersInterrupted(str(err)) from None
            raise
    except (KeyboardInterrupt, WorkersInterrupted):
        if apart:
            sweep_summary(outcomes(checked.plans))  # type: ignore[union-attr]
            print("nsae: interrupted: re-run the same command to continue", file=sys.stderr)
        else:
            print("nsae: interrupted before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_marker(os.getpid()).unlink(missing_ok=True)
    if checked is None:
        return
    ended = outcomes(checked.plans)
    if len(ended) > 1 or any(outcome == "failed" for _, outcome, _ in ended):
        code = sweep_summary(ended)
        if any(outcome == "finished" or outcome == "skipped" for _, outcome, _ in ended):
            sweep_dir = os.path.commonpath([str(d.parent) for d, _, _ in ended])
            print(f"nsae: report: python -m nsae.report {display(sweep_dir)}", flush=True)
        sys.exit(code)
