"""The run directory: one job's files, their state, and the one place that names them.

    config.yaml        the resolved config (written before anything else of the run)
    overrides.yaml     the command-line overrides of this job
    norm_stats.json    per-layer ||x|| statistics and the coefficients c_l, before training
    metrics.json       the final evaluation, with the condition and the provenance
    skipped.json       a sweep job not trained because another job computes it exactly
    failed.json        a sweep job that failed: its one error line
    train.log          the job's log (ddp_rank_<r>.log: another DDP rank's)
    checkpoints/       last.ckpt, refreshed every validation interval
    layer_<l>/         each layer's exported SAE (`nsae.export`)
    synthetic/         a synthetic source's ground truth

Every JSON file is written atomically (a reader sees the old file or the whole new one).
`RunDir.plan` decides what a new job does with a directory that already holds a run: a
finished run is skipped when its resolved config equals the new one (paths and bookkeeping
aside) and otherwise refused; an interrupted run (a checkpoint, no metrics.json) resumes in
a sweep (same config) and needs `resume=true` in a single run. Nothing finished is rewritten.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nsae.constants import ASSETS, BOOKKEEPING
from nsae.errors import NsaeError

CONFIG = "config.yaml"  # every run directory has one, written first
Plan = Literal["new", "skip", "resume"]
Outcome = Literal["finished", "skipped", "failed", "unfinished"]


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': v} from nested dicts."""
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.")
    return out


ASSET_MARK = "/nsae/assets/"  # in an absolute asset path of any checkout


def relocate(value: Any) -> Any:
    """Asset paths of another checkout (or `embedded:<name>`) as this checkout's; anything
    else unchanged (recursively through dicts and lists)."""
    if isinstance(value, dict):
        return {k: relocate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v) for v in value]
    if isinstance(value, str):
        if value.startswith("embedded:"):
            return str(ASSETS / value[len("embedded:") :])
        if ASSET_MARK in value and not Path(value).exists():
            return str(ASSETS / value.rsplit(ASSET_MARK, 1)[1])
    return value


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
        if not any(k == p or k.startswith(p + ".") for p in BOOKKEEPING)
    }


def differing_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    a, b = comparable(before), comparable(after)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass(frozen=True)
class RunDir:
    """One job's run directory."""

    path: Path

    # -- its files --------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def overrides(self) -> Path:
        return self.path / "overrides.yaml"

    @property
    def norm_stats(self) -> Path:
        return self.path / "norm_stats.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def skipped(self) -> Path:
        return self.path / "skipped.json"

    @property
    def failed(self) -> Path:
        return self.path / "failed.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def synthetic(self) -> Path:
        return self.path / "synthetic"

    def log(self, name: str = "train") -> Path:
        return self.path / f"{name}.log"

    # -- its state --------------------------------------------------------------------------
    def finished(self) -> bool:
        return self.metrics.is_file() or self.skipped.is_file()

    def interrupted(self) -> bool:
        return self.checkpoint.is_file()

    def outcome(self) -> tuple[Outcome, str | None]:
        """How the job in this directory ended, and why (for failed and unfinished ones)."""
        if self.failed.is_file():
            return "failed", str(read_json(self.failed).get("error", "?"))
        if self.skipped.is_file():
            return "skipped", None
        if self.metrics.is_file():
            return "finished", None
        if self.interrupted():
            return "unfinished", "resumes on a re-run"
        return "unfinished", "not started or stopped before training"

    def saved_config(self) -> dict[str, Any]:
        import yaml

        return (yaml.safe_load(self.config.read_text()) or {}) if self.config.is_file() else {}

    def checkpoint_step(self) -> int | None:
        """The global step the checkpoint was written at (None without one)."""
        if not self.interrupted():
            return None
        import torch

        try:
            ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=False, mmap=True)
            return int(ckpt["global_step"])
        except Exception as err:  # random bytes, a truncated file, another kind of file
            os_reason = isinstance(err, OSError) and err.strerror
            reason = err.strerror if os_reason else "not a checkpoint"
            raise NsaeError(
                f"checkpoint {self.checkpoint} is unreadable ({reason}), so the run cannot be "
                "resumed; delete it and re-run without resume=true to start over, or choose "
                "another hydra.run.dir"
            ) from None

    # -- a new job's plan for it ------------------------------------------------------------
    def plan(self, resolved: dict[str, Any], multirun: bool, resume: bool) -> Plan:
        """What a job with this resolved config does here (see the module doc)."""
        where = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if self.path.exists() and not self.path.is_dir():
            raise NsaeError(f"run directory {self.path} is a file; choose another {where}")
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())
        if not existing.is_dir():
            raise NsaeError(f"run directory {self.path} is under a file; choose another {where}")
        if not os.access(existing, os.W_OK):
            raise NsaeError(f"run directory {self.path} is not writable; choose another {where}")
        finished, interrupted = self.finished(), self.interrupted()
        if not (finished or interrupted):
            if resume:
                raise NsaeError(
                    f"resume=true but {self.checkpoint} does not exist; "
                    "valid: a run directory whose training was interrupted"
                )
            return "new"
        changed = differing_keys(self.saved_config(), resolved)
        if finished:
            if multirun and not changed:
                return "skip"
            if multirun:
                raise NsaeError(
                    f"{self.path} holds a finished run under another configuration (differs "
                    f"in {', '.join(changed[:6])}); choose another hydra.sweep.dir"
                )
            raise NsaeError(
                f"{self.path} already holds a finished run (metrics.json); "
                "choose another hydra.run.dir"
            )
        if changed:
            raise NsaeError(
                f"the checkpoint in {self.path} was written under another configuration "
                f"(differs in {', '.join(changed[:6])}); choose another run directory"
            )
        self.checkpoint_step()  # readable, or one line before anything is written
        if multirun or resume or int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0:
            return "resume"
        raise NsaeError(
            f"{self.path} holds an interrupted run; continue it with resume=true, "
            "or choose another hydra.run.dir"
        )

    # -- its writes -------------------------------------------------------------------------
    def start(self, plan: Plan, resolved: dict[str, Any], overrides: list[str] | None) -> None:
        """Before training: the directory, no stale failure, and (a new job) its config and
        overrides."""
        from omegaconf import OmegaConf

        self.path.mkdir(parents=True, exist_ok=True)
        self.failed.unlink(missing_ok=True)
        if plan == "new":
            self.config.write_text(OmegaConf.to_yaml(resolved))
            if overrides is not None:
                self.overrides.write_text(OmegaConf.to_yaml(list(overrides)))

    def write(self, file: Path, obj: Any) -> None:
        """One of this directory's JSON files, atomically."""
        assert file.parent == self.path, f"{file} is not a file of {self.path}"
        write_json(file, obj)

    def skip_as_alpha(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """A coeff=beta cell with k = 0 is its alpha cell by construction (c_l = alpha n_l^0):
        write skipped.json naming the sibling alpha job's directory."""

        def identity(flat_cfg: dict[str, Any]) -> dict[str, Any]:
            """Everything but the coefficient mode, its exponent and the default tables."""
            skip = ("coeff.mode", "coeff.k", "coeff.default_alpha")
            return {k: v for k, v in flat_cfg.items() if not k.startswith(skip)}

        mine = identity(comparable(resolved))
        sibling = None
        for other in sorted(self.path.parent.iterdir()):
            theirs = comparable(RunDir(other).saved_config()) if other != self.path else {}
            if theirs.get("coeff.mode") == "alpha" and identity(theirs) == mine:
                sibling = other.name
                break
        self.write(
            self.skipped,
            {
                "reason": "coeff=beta with k = 0 is coeff=alpha by construction "
                "(c_l = alpha * n_l^0); the alpha cell's run holds its results",
                "same_as": sibling,
                "condition": {
                    "sae_type": resolved["sae"]["type"],
                    "coeff": "alpha",
                    "alpha": resolved["coeff"]["alpha"],
                },
            },
        )
        print(f"skipping {self.path}: coeff=beta with k = 0 equals its alpha cell ({sibling})")
        return {"skipped": True}

    def attach_log(self, name: str = "train", this_thread_only: bool = False) -> logging.Handler:
        """Send the root logger to this directory's <name>.log too (nsae, not Hydra, owns the
        file); this_thread_only: only the records logged by the calling thread (a job of a
        cohort)."""
        handler = logging.FileHandler(self.log(name))
        if this_thread_only:
            thread = threading.get_ident()
            handler.addFilter(lambda record: record.thread == thread)
        fmt = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
        logging.getLogger().addHandler(handler)
        return handler


def detach_log(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
