"""The files of a run directory that nsae writes itself, and what they record.

    config.yaml        the resolved config (written before anything else of the run)
    overrides.yaml     the command-line overrides of this job
    norm_stats.json    per-layer ||x|| statistics and the coefficients c_l, before training
    metrics.json       the final evaluation, with the condition and the provenance
    skipped.json       a sweep job not trained because another job computes it exactly
    failed.json        a sweep job that failed: its one error line
    train.log          the job's log

Every JSON file is written atomically (a reader sees the old file or the whole new one).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from nsae.preflight import display_path

log = logging.getLogger(__name__)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the nsae checkout this code runs from ('+dirty' if it has changes),
    or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def dataset_name(data: Any) -> str:
    """The training data as the user named it: `embedded:kjv` for the shipped text, else
    the dataset path (and config name) or the local training files."""
    files = data.get("data_files") or {}
    train = files.get(data.train_split) if hasattr(files, "get") else None
    if train is not None:
        shown = display_path(str(train))
        if isinstance(shown, str) and shown.startswith("embedded:"):
            return shown.rsplit("/", 1)[0]
        return f"{data.path}:{shown}"
    return str(data.path) + (f"/{data.name}" if data.get("name") else "")


def provenance(cfg: Any, steps: int, world: int, unique_tokens: int | None) -> dict[str, Any]:
    """Where a run's numbers come from: code, model, data and how much of it was seen."""
    from nsae import __version__

    train_tokens = steps * cfg.data.batch_size * world
    return {
        "nsae_version": __version__,
        "git_commit": git_commit(),
        "source": display_path(str(cfg.source.get("name", cfg.source.get("kind")))),
        "dataset": dataset_name(cfg.data)
        if cfg.source.get("kind", "lm") != "synthetic"
        else f"synthetic:{cfg.source.name}",
        "hook_site": cfg.source.get("hook_site"),
        "seed": cfg.seed,
        "steps": steps,
        "batch_size": cfg.data.batch_size,
        "train_tokens": train_tokens,
        "unique_train_tokens": unique_tokens,
        "epochs": None if not unique_tokens else round(train_tokens / unique_tokens, 4),
    }


def condition(cfg: Any, k: float | None) -> dict[str, Any]:
    """The grid cell a run belongs to."""
    return {
        "sae_type": cfg.sae.type,
        "normalization_method": cfg.loss.normalization_method,
        "coeff": cfg.coeff.mode,
        "alpha": cfg.coeff.alpha,
        "scale": cfg.coeff.get("scale", 1.0),
        "k": k,
    }


def finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() or (run_dir / "skipped.json").is_file()


def attach_log_file(
    run_dir: Path, name: str = "train", this_thread_only: bool = False
) -> logging.Handler:
    """Send the root logger to <run dir>/<name>.log too (nsae, not Hydra, owns the file);
    this_thread_only: only the records logged by the calling thread (a bank's job)."""
    handler = logging.FileHandler(run_dir / f"{name}.log")
    if this_thread_only:
        thread = threading.get_ident()
        handler.addFilter(lambda record: record.thread == thread)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def skip_as_alpha(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """A coeff=beta cell with k = 0 is its alpha cell by construction (c_l = alpha n_l^0)."""
    from omegaconf import OmegaConf

    from nsae.preflight import comparable

    mine = comparable(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]

    def identity(flat_cfg: dict[str, Any]) -> dict[str, Any]:
        """Everything but the coefficient mode, its exponent and the default tables."""
        skip = ("coeff.mode", "coeff.k", "coeff.default_alpha")
        return {k: v for k, v in flat_cfg.items() if not k.startswith(skip)}

    sibling = None
    for other in sorted(run_dir.parent.iterdir()):
        config = other / "config.yaml"
        if other == run_dir or not config.is_file():
            continue
        theirs = comparable(OmegaConf.to_container(OmegaConf.load(config)))  # type: ignore[arg-type]
        if theirs.get("coeff.mode") == "alpha" and identity(theirs) == identity(mine):
            sibling = other.name
            break
    write_json(
        run_dir / "skipped.json",
        {
            "reason": "coeff=beta with k = 0 is coeff=alpha by construction "
            "(c_l = alpha * n_l^0); the alpha cell's run holds its results",
            "same_as": sibling,
            "condition": {"sae_type": cfg.sae.type, "coeff": "alpha", "alpha": cfg.coeff.alpha},
        },
    )
    print(f"skipping {run_dir}: coeff=beta with k = 0 equals its alpha cell ({sibling})")
    return {"skipped": True}
