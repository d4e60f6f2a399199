"""What a finished run records: metrics.json's content (the condition, the provenance, the
final evaluation), and the files written when training starts (norm statistics and
coefficients), by the `RunFiles` callback."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nsae.rundir import RunDir, display_path


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


class RunFiles(Callback):
    """At the start of training: norm_stats.json (rank 0), and c_l and n_l to every logger
    (once: a resumed run keeps the values it logged before)."""

    def __init__(self, run_dir: RunDir, resumed: bool) -> None:
        self.run_dir, self.resumed = run_dir, resumed

    def on_fit_start(self, trainer: L.Trainer, module: Any) -> None:
        dm = trainer.datamodule
        if trainer.is_global_zero:
            self.run_dir.write(
                self.run_dir.norm_stats,
                {"layers": dm.norm_stats, "coefficients": module.coefficients},
            )
        if self.resumed:
            return
        values = {f"setup/coeff/{k}": v for k, v in module.coefficients.items()}
        values |= {f"setup/mean_norm/{k}": s["mean"] for k, s in dm.norm_stats.items()}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=0)


def summarize(
    cfg: Any,
    trainer: L.Trainer,
    module: Any,
    dm: Any,
    layers: list[int],
    k: float | None,
    eval_seconds: float,
) -> dict[str, Any]:
    """metrics.json: the condition, where the numbers come from, and the final evaluation."""
    from nsae.data.norms import mean_norms
    from nsae.metrics import cross_layer_stats, density_histogram, per_layer_dict

    cache, fixed = dm.acts.cache, dm.acts.fixed
    unique = int(cfg.data.cache_tokens) if cache is not None else None
    prov = provenance(cfg, trainer.global_step, trainer.world_size, unique)
    unit = cfg.data.batch_size if dm.synthetic is not None else cfg.data.context_size
    eval_tokens = -(-cfg.data.n_eval_tokens // unit) * unit  # whole eval batches / contexts
    summary: dict[str, Any] = {
        "condition": condition(cfg, k),
        "seed": cfg.seed,
        "provenance": prov,
        "source": prov["source"],
        "hook_site": prov["hook_site"],
        "layers": layers,
        "n_features": module.sae.n_features,
        "steps": trainer.global_step,
        "train_tokens": prov["train_tokens"],
        "eval_tokens": eval_tokens,
        "eval_seconds": round(eval_seconds, 2),
        "coefficients": module.coefficients,
        "activation_cache": None
        if cache is None
        else {"key": cache.key, "built_by_this_job": dm.built["activation_cache"]},
        "fixed_inputs": None
        if fixed is None
        else {"key": fixed.key, "built_by_this_job": dm.built["fixed_inputs"]},
        "metrics": per_layer_dict(module.eval_results, layers),
        "train_split_metrics": per_layer_dict(module.evaluate_tokens(dm.norm_sample), layers),
    }
    summary |= module.binned_results()
    summary["feature_density_histogram"] = density_histogram(module.eval_density, layers)
    summary["cross_layer"] = cross_layer_stats(
        module.eval_results["l0"].reshape(-1).tolist(),
        mean_norms(dm.norm_stats, layers).tolist(),
    )
    return summary
