"""The run's loggers (`logger=` configs), made so that a resumed run keeps its history.

- CSV (`logs/metrics.csv`): Lightning's CSVLogger deletes an existing metrics file when it
  starts. A resumed run keeps the rows logged before its checkpoint's step (the steps after
  it are logged again, identically, by the resumed training) and appends to them.
- W&B: each run directory has one W&B run id (derived from the directory), and a resumed
  run continues that W&B run (`resume="allow"`) instead of starting another.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from nsae.ranks import global_rank


def wandb_run_id(run_dir: Path) -> str:
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]


def build_loggers(logger_cfg: Any, run_dir: Path, resume_step: int | None) -> list[Any]:
    """Instantiate every configured logger; with `resume_step`, continue the earlier run's
    history up to that step."""
    loggers = []
    for conf in (logger_cfg or {}).values():
        target = str(conf.get("_target_", ""))
        extra: dict[str, Any] = {}
        if target.endswith("WandbLogger"):
            extra = {"id": wandb_run_id(run_dir), "resume": "allow"}
        logger = instantiate(conf, **extra)
        if target.endswith("CSVLogger") and resume_step is not None and global_rank() == 0:
            _keep_csv_history(logger, resume_step)
        loggers.append(logger)
    return loggers


def _keep_csv_history(logger: Any, resume_step: int) -> None:
    """Put the rows logged before `resume_step` back after the logger cleared its file."""
    path = Path(logger.log_dir) / "metrics.csv"
    rows: list[dict[str, str]] = []
    header: list[str] = []
    if path.is_file():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) < resume_step]
    writer = logger.experiment  # creating it deletes the old file
    if not header:
        return
    with path.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=header)
        out.writeheader()
        out.writerows(rows)
    writer.metrics_keys = list(header)  # the file's column order: later rows append
