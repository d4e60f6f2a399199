"""Before Hydra writes anything: expand the sweep, compose every job, check it, and decide
what to do with each job's run directory.

Hydra creates a job's directory and hands the job to nsae; nsae itself writes every file in
it (`conf/config.yaml` sets `hydra.output_subdir: null` and a console-only job log, so Hydra
writes no `.hydra/` files and no log). `preflight(argv)` runs first, in the process the user
started, and composes each job exactly as Hydra will:

- a bad job (see `nsae.config.validate`) stops the whole command before any job starts,
  with one line naming every bad job;
- a job whose directory holds a finished run (`metrics.json`) is skipped when its resolved
  config equals the new one (paths aside), and otherwise stops the command, naming the
  job and the keys that differ;
- a job whose directory holds an interrupted run (a checkpoint, no metrics.json) resumes
  it in a sweep (same config) and needs `resume=true` in a single run.

`job_plan(cfg, run_dir, multirun)` is that decision for one job; `nsae.train` calls it
again inside each job (the cluster may run jobs elsewhere), so the rule holds however the
job was launched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from omegaconf import DictConfig, OmegaConf

from nsae.config import ASSETS, CONF_DIR
from nsae.errors import NsaeError

# Keys that never change a result: bookkeeping, loggers (names, paths), the cache location.
IGNORED_PREFIXES = ("resume", "logger", "data.cache_dir", "hydra")

Plan = Literal["new", "skip", "resume"]


@dataclass
class JobCheck:
    """One job of the command: its overrides, composed config and run directory."""

    overrides: list[str]
    cfg: DictConfig  # the task config (no hydra node), interpolations resolved
    run_dir: Path


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': v} from nested dicts."""
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.")
    return out


def display_path(value: Any) -> Any:
    """A path inside nsae's shipped assets as `embedded:<name>` (the same on every machine);
    anything else unchanged."""
    if isinstance(value, str) and value.startswith(str(ASSETS) + os.sep):
        return "embedded:" + value[len(str(ASSETS)) + 1 :]
    return value


def comparable(resolved: dict[str, Any]) -> dict[str, Any]:
    """The flattened config that decides a run's results: paths of shipped assets made
    machine-independent, bookkeeping keys left out."""
    return {
        k: display_path(v)
        for k, v in flat(resolved).items()
        if not any(k == p or k.startswith(p + ".") for p in IGNORED_PREFIXES)
    }


def differing_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    a, b = comparable(before), comparable(after)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


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


def job_plan(resolved: dict[str, Any], run_dir: Path, multirun: bool, resume: bool) -> Plan:
    """What to do with `run_dir` for a job with this resolved config (see the module doc)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NsaeError(f"run directory {run_dir} is a file; choose another hydra.run.dir")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        raise NsaeError(f"run directory {run_dir} is under a file; choose another hydra.run.dir")
    if not os.access(existing, os.W_OK):
        raise NsaeError(f"run directory {run_dir} is not writable; choose another hydra.run.dir")
    finished = (run_dir / "metrics.json").is_file() or (run_dir / "skipped.json").is_file()
    interrupted = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if not (finished or interrupted):
        if resume:
            raise NsaeError(
                f"resume=true but {run_dir / 'checkpoints' / 'last.ckpt'} does not exist; "
                "valid: a run directory whose training was interrupted"
            )
        return "new"
    config_file = run_dir / "config.yaml"
    before = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    changed = differing_keys(before or {}, resolved)
    if finished:
        if multirun and not changed:
            return "skip"
        if multirun:
            raise NsaeError(
                f"{run_dir} holds a finished run under another configuration (differs in "
                f"{', '.join(changed[:6])}); choose another hydra.sweep.dir"
            )
        raise NsaeError(
            f"{run_dir} already holds a finished run (metrics.json); choose another hydra.run.dir"
        )
    if changed:
        raise NsaeError(
            f"the checkpoint in {run_dir} was written under another configuration "
            f"(differs in {', '.join(changed[:6])}); choose another run directory"
        )
    if multirun or resume or int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0:
        return "resume"
    raise NsaeError(
        f"{run_dir} holds an interrupted run; continue it with resume=true, "
        "or choose another hydra.run.dir"
    )


def _split_argv(argv: list[str]) -> tuple[bool, list[str]] | None:
    """(multirun, overrides), or None when nsae should leave the command to Hydra."""
    multirun, overrides = False, []
    for arg in argv:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):  # help, info, another config, ...: Hydra's own business
            return None
        else:
            overrides.append(arg)
    return multirun, overrides


def _job_overrides(base: DictConfig, task: list[str], loader: Any) -> list[list[str]]:
    """Every job of a sweep as its list of overrides, as Hydra's basic sweeper makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + task
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_jobs(argv: list[str]) -> tuple[bool, list[JobCheck]] | None:
    """Compose every job of the command line as Hydra will; None if nsae should not."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    split = _split_argv(argv)
    if split is None:
        return None
    multirun, overrides = split
    hydra_args = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    task = [o for o in overrides if o not in hydra_args]
    jobs_overrides: list[list[str]] = [] if multirun else [task]
    checks: list[JobCheck] = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        if multirun:
            plain = [o for o in task if not _is_sweep(o)]
            base = compose("config", overrides=hydra_args + plain, return_hydra_config=True)
            loader = GlobalHydra.instance().config_loader()
            jobs_overrides = _job_overrides(base, task, loader)
        for num, job in enumerate(jobs_overrides):
            extra = [f"hydra.job.num={num}", f"hydra.job.id={num}"] if multirun else []
            cfg = compose("config", overrides=hydra_args + extra + job, return_hydra_config=True)
            if multirun:
                out = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            else:
                out = Path(str(cfg.hydra.run.dir))
            HydraConfig.instance().set_config(cfg)
            checks.append(JobCheck(job, cfg, out.absolute()))
    return multirun, checks


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


class Checked(NamedTuple):
    plans: dict[Path, Plan]  # each run directory's plan
    launcher: str  # the Hydra launcher's _target_


def preflight(argv: list[str]) -> Checked | None:
    """Check every job of the command before Hydra starts; return each run directory's
    plan and the launcher, or None when the command is left to Hydra (help, another
    config, ...). Raises NsaeError (one line) if any job is bad or would touch an earlier
    run."""
    from nsae.config import validate

    try:
        composed = compose_jobs(argv)
    except NsaeError:
        raise
    except Exception as err:  # Hydra's own composition errors, as one line
        raise NsaeError(explain_hydra_error(err, argv)) from None
    if composed is None:
        return None
    multirun, jobs = composed
    if not jobs:
        sweeps = " ".join(a for a in argv if "(" in a or "," in a)
        raise NsaeError(f"the sweep has no jobs: {sweeps or 'its overrides'} match no option")
    problems, plans = [], {}
    for num, job in enumerate(jobs):
        try:
            resolved = resolved_task_config(job.cfg)
            validate(OmegaConf.create(resolved))
            if "NsaeBank" in str(OmegaConf.select(job.cfg, "hydra.launcher._target_") or ""):
                from nsae.bank import bank_problem

                problem = bank_problem(OmegaConf.create(resolved))
                if problem:
                    raise NsaeError(f"hydra/launcher=nsae_bank: {problem}")
            plans[job.run_dir] = job_plan(
                resolved, job.run_dir, multirun, bool(resolved.get("resume", False))
            )
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
    return Checked(plans, str(OmegaConf.select(jobs[0].cfg, "hydra.launcher._target_") or ""))


def explain_hydra_error(err: Exception, argv: list[str] | None = None) -> str:
    """One line for a Hydra composition error: the key or option, and what is valid."""
    import re

    from hydra import compose, initialize_config_dir

    from nsae.config import group_options

    text = str(err)
    if "Config group override must be" in text:
        for arg in argv or []:
            group = arg.split("=", 1)[0].lstrip("+~")
            if "=" in arg and (CONF_DIR / group).is_dir():
                valid = ", ".join(group_options(group))
                return f"{arg}: a config group takes option names; valid: {valid}"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        return f"{group}={option} is not an option; valid: {', '.join(options) or '(none)'}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if unknown:
        key = unknown.group(1)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            base = compose("config")
        node = OmegaConf.select(base, parent) if parent else base
        keys = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "(none)"
        where = f"under {parent}" if parent else "at the top level"
        return f"{key} is not a config key; valid keys {where}: {keys} (+{key}=... adds a new key)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"config: {first}"
