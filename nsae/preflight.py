"""Before Hydra writes anything: expand the sweep, compose every job, check it, and decide
what to do with each job's run directory.

Hydra creates a job's directory and hands the job to nsae; nsae itself writes every file in
it (`conf/config.yaml` sets `hydra.output_subdir: null` and a console-only job log, so Hydra
writes no `.hydra/` files and no log). `preflight(argv)` runs first, in the process the user
started, and composes each job exactly as Hydra will:

- a bad job (see `nsae.checks.validate`) stops the whole command before any job starts,
  with one line naming every bad job;
- a job whose directory holds a finished run (`metrics.json`) is skipped when its resolved
  config equals the new one (paths aside), and otherwise stops the command, naming the
  job and the keys that differ;
- a job whose directory holds an interrupted run (a checkpoint, no metrics.json) resumes
  it in a sweep (same config) and needs `resume=true` in a single run.

`RunDir.plan` (`nsae.rundir`) is that decision for one job; each job makes it again when it
starts (the cluster may run jobs elsewhere), so the rule holds however the job was
launched.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from nsae.constants import CONF_DIR
from nsae.errors import NsaeError
from nsae.launchers import Kind, job_problem, kind_of
from nsae.rundir import Plan, RunDir


@dataclass
class JobCheck:
    """One job of the command: its overrides, composed config and run directory."""

    overrides: list[str]
    cfg: DictConfig  # the task config (no hydra node), interpolations resolved
    run_dir: Path


def resolved_task_config(cfg: DictConfig) -> dict[str, Any]:
    """The task config as plain data, without the `hydra` node and the loggers (whose
    interpolations need a running Hydra job)."""
    data = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    loggers = data.pop("logger", None)
    node = OmegaConf.create(data)
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    if loggers is not None:
        out["logger"] = loggers
    return out


def _split_argv(argv: list[str]) -> tuple[bool, list[str], str] | None:
    """(multirun, overrides, config name), or None when nsae should leave the command to
    Hydra (help, info, another config directory, ...)."""
    multirun, overrides, name = False, [], "config"
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if arg in ("-m", "--multirun"):
            multirun = True
        elif flag in ("-cn", "--config-name"):
            name = value if eq else next(args, "")
        elif arg.startswith("-"):
            return None
        else:
            overrides.append(arg)
    return multirun, overrides, name


def _job_overrides(base: DictConfig, task: list[str], loader: Any) -> list[list[str]]:
    """Every job of a sweep as its list of overrides, as Hydra's basic sweeper (or nsae's,
    with its `only`) makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nsae.sweep import restrict_axes, restricted_notes

    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + task
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    only = OmegaConf.select(base, "hydra.sweeper.only") or {}
    for note in restricted_notes(task, only):
        print(note, file=sys.stderr, flush=True)
    return restrict_axes(jobs, only)


def compose_jobs(argv: list[str]) -> tuple[bool, list[JobCheck], str] | None:
    """Compose every job of the command line as Hydra will; None if nsae should not. Also
    the override that pins the run or sweep directory to the one checked here (its default
    holds `${now:...}`, which Hydra would resolve again, seconds later)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from nsae.ranks import hydra_quote

    split = _split_argv(argv)
    if split is None:
        return None
    multirun, overrides, name = split
    hydra_args = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    task = [o for o in overrides if o not in hydra_args]
    jobs_overrides: list[list[str]] = [] if multirun else [task]
    checks: list[JobCheck] = []
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        plain = [o for o in task if not _is_sweep(o)]
        base = compose(name, overrides=hydra_args + plain, return_hydra_config=True)
        pin = f"{key}={hydra_quote(str(OmegaConf.select(base, key)))}"
        hydra_args = [o for o in hydra_args if o.split("=", 1)[0].lstrip("+~") != key] + [pin]
        if multirun:
            loader = GlobalHydra.instance().config_loader()
            jobs_overrides = _job_overrides(base, task, loader)
        for num, job in enumerate(jobs_overrides):
            extra = [f"hydra.job.num={num}", f"hydra.job.id={num}"] if multirun else []
            cfg = compose(name, overrides=hydra_args + extra + job, return_hydra_config=True)
            if multirun:
                out = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            else:
                out = Path(str(cfg.hydra.run.dir))
            HydraConfig.instance().set_config(cfg)
            checks.append(JobCheck(job, cfg, out.absolute()))
    return multirun, checks, pin


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


class Checked(NamedTuple):
    plans: dict[Path, Plan]  # each run directory's plan
    launcher: Kind  # the kind of the Hydra launcher (`nsae.launchers`)
    pin: str  # hydra.run.dir=... or hydra.sweep.dir=...: the directory checked here


def preflight(argv: list[str]) -> Checked | None:
    """Check every job of the command before Hydra starts; return each run directory's
    plan and the launcher, or None when the command is left to Hydra (help, another
    config, ...). Raises NsaeError (one line) if any job is bad or would touch an earlier
    run."""
    from nsae.checks import validate
    from nsae.hints import check_added_keys, explain_hydra_error

    split = _split_argv(argv)
    if split is not None:
        check_added_keys(split[1])
    try:
        composed = compose_jobs(argv)
    except NsaeError:
        raise
    except Exception as err:  # Hydra's own composition errors, as one line
        raise NsaeError(explain_hydra_error(err, argv)) from None
    if composed is None:
        return None
    multirun, jobs, pin = composed
    if not jobs:
        sweeps = " ".join(a for a in argv if "(" in a or "," in a)
        raise NsaeError(f"the sweep has no jobs: {sweeps or 'its overrides'} match no option")
    problems, plans = [], {}
    kind = kind_of(jobs[0].cfg)
    for num, job in enumerate(jobs):
        try:
            resolved = resolved_task_config(job.cfg)
            validate(OmegaConf.create(resolved))
            problem = job_problem(kind, OmegaConf.create(resolved))
            if problem:
                raise NsaeError(problem)
            resume = bool(resolved.get("resume", False))
            plans[job.run_dir] = RunDir(job.run_dir).plan(resolved, multirun, resume)
        except NsaeError as err:
            problems.append((num, job.overrides, str(err)))
        except Exception as err:  # an interpolation that cannot resolve, ...
            problems.append((num, job.overrides, f"config: {str(err).splitlines()[0]}"))
    if problems and not multirun:
        raise NsaeError(problems[0][2])
    if problems:
        listed = "; ".join(
            f"job {num} ({' '.join(o for o in ov if '=' in o)}): {msg}" for num, ov, msg in problems
        )
        raise NsaeError(
            f"{len(problems)} of {len(jobs)} jobs cannot run, so none was started: {listed}"
        )
    return Checked(plans, kind, pin)
