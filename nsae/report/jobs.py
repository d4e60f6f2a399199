"""Reading a sweep: one `Job` per job directory, finished or not."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SAE_TYPES = ("none", "normalized_sae")
NORMS = ("none", "input_norm", "input_norm_squared")
COEFFS = ("alpha", "beta")


@dataclass
class Job:
    path: Path
    sae_type: str
    norm: str
    coeff: str
    alpha: float | None
    scale: float = 1.0  # coeff.scale: this job's alpha relative to the condition's default
    summary: dict[str, Any] | None = None  # metrics.json; None when the job did not finish
    problem: str | None = None  # why the job has no usable metrics.json
    norm_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def condition(self) -> tuple[str, str, str]:
        return self.sae_type, self.norm, self.coeff

    @property
    def label(self) -> str:
        return f"{self.sae_type}/{self.norm}/{self.coeff}"

    def mean(self, metric: str) -> float | None:
        """A headline number: a metric's mean over layers, or a cross-layer statistic."""
        if self.summary is None:
            return None
        if metric in self.summary.get("cross_layer", {}):
            return self.summary["cross_layer"][metric]
        value = self.summary["metrics"].get(metric, {}).get("mean")
        return None if value is None or not math.isfinite(value) else value

    def per_layer(self, metric: str) -> list[float]:
        assert self.summary is not None
        row = self.summary["metrics"][metric]
        return [row[f"layer_{i}"] for i in self.summary["layers"]]

    def mean_norms(self) -> list[float]:
        assert self.summary is not None
        return [self.norm_stats["layers"][f"layer_{i}"]["mean"] for i in self.summary["layers"]]


def _config(job_dir: Path) -> dict[str, Any] | None:
    for name in ("config.yaml", ".hydra/config.yaml"):
        path = job_dir / name
        if path.is_file():
            try:
                return yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                continue
    return None


def _alpha(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None  # an unresolved interpolation in .hydra/config.yaml


def load_job(job_dir: Path) -> Job | None:
    """The job in `job_dir`, or None if the directory is not a job of a sweep."""
    cfg = _config(job_dir)
    if cfg is None:
        return None
    coeff = cfg["coeff"]
    job = Job(
        job_dir,
        cfg["sae"]["type"],
        cfg["loss"]["normalization_method"],
        coeff["mode"],
        _alpha(coeff.get("alpha")),
        _alpha(coeff.get("scale", 1.0)) or 1.0,
    )
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        job.problem = "did not finish (no metrics.json)"
        return job
    try:
        job.summary = json.loads(metrics_path.read_text())
        job.summary["metrics"]
        job.norm_stats = json.loads((job_dir / "norm_stats.json").read_text())
        job.alpha = job.summary["condition"]["alpha"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        job.summary, job.problem = None, f"corrupt output ({type(err).__name__}: {err})"
    return job


def load_sweep(sweep_dir: Path) -> list[Job]:
    """Every job directory below `sweep_dir` (a single run directory counts as a sweep)."""
    below = sorted(p for p in sweep_dir.rglob("*") if p.is_dir() and ".hydra" not in p.parts)
    candidates = [sweep_dir, *below]
    return [job for job in map(load_job, candidates) if job is not None]
