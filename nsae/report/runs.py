"""Reading a sweep: one `Run` per run directory (a directory holding config.yaml), whatever
its state: finished (metrics.json), skipped (skipped.json: a beta job with k = 0, equal to
its alpha job by construction), failed (failed.json), unfinished, or corrupt."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nsae.rundir import CONFIG, RunDir

SAE_TYPES = ("none", "normalized_sae")
NORMS = ("none", "input_norm", "input_norm_squared")
COEFFS = ("alpha", "beta")


@dataclass
class Run:
    path: Path
    rel: str  # the path relative to the sweep dir ("." for the sweep dir itself)
    config: dict[str, Any]  # the flattened resolved config: {"sae.type": "none", ...}
    status: str = "unfinished"  # done | skipped | failed | unfinished | corrupt
    problem: str | None = None  # one line for the report's problem table
    summary: dict[str, Any] | None = None  # metrics.json (the alpha job's, for a skipped run)
    norm_stats: dict[str, Any] = field(default_factory=dict)
    same_as: str | None = None  # skipped runs: the alpha job's rel path
    origin: Path | None = None  # the dir holding the numbers' files (the alpha job's if skipped)

    @property
    def sae_type(self) -> str:
        return str(self.config.get("sae.type"))

    @property
    def norm(self) -> str:
        return str(self.config.get("loss.normalization_method"))

    @property
    def coeff(self) -> str:
        return str(self.config.get("coeff.mode"))

    @property
    def k(self) -> float | None:
        """The effective beta exponent: metrics.json's condition.k, else coeff.k, else the
        design default (2 - p bounded features, 1 - p otherwise)."""
        if self.coeff != "beta":
            return None
        if self.status == "skipped":
            return 0.0  # skipped.json: this beta job is its alpha job, k = 0
        if self.summary is not None and self.summary.get("condition", {}).get("k") is not None:
            return float(self.summary["condition"]["k"])
        k = self.config.get("coeff.k")
        if k is not None:
            return float(k)
        p = NORMS.index(self.norm) if self.norm in NORMS else 0
        return float((2 if self.sae_type == "normalized_sae" else 1) - p)

    @property
    def alpha(self) -> float | None:
        if self.summary is not None and self.status == "done":
            return _num(self.summary.get("condition", {}).get("alpha"))
        return _num(self.config.get("coeff.alpha"))

    @property
    def scale(self) -> float:
        return _num(self.config.get("coeff.scale")) or 1.0

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def condition(self) -> tuple[str, str, str, float | None]:
        return self.sae_type, self.norm, self.coeff, self.k

    @property
    def ok(self) -> bool:
        """Whether the run has numbers to show (finished, or skipped as equal to one)."""
        return self.summary is not None

    def layers(self) -> list[int]:
        return list(self.summary["layers"]) if self.summary else []

    def value(self, metric: str, layer: int | str = "mean") -> float | None:
        """A number from metrics.json: metrics[metric][layer_<i> | mean], a cross-layer
        statistic (l0_cv), or a train-split metric ("train_split/l0"); None if absent."""
        if self.summary is None:
            return None
        key = layer if layer == "mean" else f"layer_{layer}"
        if metric in self.summary.get("cross_layer", {}):
            return _num(self.summary["cross_layer"][metric])
        if metric.startswith("train_split/"):
            row = self.summary.get("train_split_metrics", {}).get(metric.split("/", 1)[1], {})
        else:
            row = self.summary.get("metrics", {}).get(metric) or self.summary.get(metric) or {}
        return _num(row.get(key)) if isinstance(row, dict) else None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as values (as tuples, hashable)."""
    if isinstance(d, list):  # hashable: a tuple of scalars, else its JSON text
        scalar = all(isinstance(x, str | int | float | bool | None) for x in d)
        return {prefix: tuple(d) if scalar else json.dumps(d, sort_keys=True, default=str)}
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.")
    return {k.rstrip("."): v for k, v in out.items()}


def _read_json(path: Path) -> dict[str, Any]:
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def load_run(run_dir: Path, sweep_dir: Path) -> Run | None:
    """The run in `run_dir`, or None if the directory holds no readable config.yaml."""
    rd = RunDir(run_dir)
    try:
        cfg = yaml.safe_load(rd.config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict):
        return None
    rel = "." if run_dir == sweep_dir else str(run_dir.relative_to(sweep_dir))
    run = Run(run_dir, rel, flatten(cfg), origin=run_dir)
    try:
        if rd.metrics.is_file():
            run.summary = _read_json(rd.metrics)
            run.summary["metrics"]
            run.norm_stats = _read_json(rd.norm_stats) if rd.norm_stats.is_file() else {}
            run.status = "done"
        elif rd.skipped.is_file():
            run.same_as = str(_read_json(rd.skipped)["same_as"])
            run.status = "skipped"
        elif rd.failed.is_file():
            run.status = "failed"
            run.problem = f"failed: {_read_json(rd.failed).get('error', '?')}"
        else:
            run.problem = "did not finish (no metrics.json, skipped.json or failed.json)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        run.summary, run.status = None, "corrupt"
        run.problem = f"corrupt output ({type(err).__name__}: {err})"
    return run


def load_sweep(sweep_dir: Path) -> list[Run]:
    """Every run directory at or below `sweep_dir` (a single run directory is a sweep of
    one); a skipped run borrows its alpha job's metrics.json and norm stats."""
    dirs = [sweep_dir, *sorted(p.parent for p in sweep_dir.rglob(f"*/{CONFIG}"))]
    dirs = [d for d in dict.fromkeys(dirs) if ".hydra" not in d.parts]
    runs = [r for r in (load_run(d, sweep_dir) for d in dirs) if r is not None]
    by_rel = {r.rel: r for r in runs}
    for run in runs:
        if run.status != "skipped":
            continue
        target = by_rel.get(str(Path(run.same_as or "")))
        if target is None or target.summary is None:
            run.problem = f"skipped as equal to {run.same_as}, which has no metrics"
            continue
        run.summary, run.norm_stats, run.origin = target.summary, target.norm_stats, target.path
    return runs
