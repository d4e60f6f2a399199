"""What a finished run records: metrics.json's content, and the files written at the start
of training (norm statistics, coefficients) by the `RunFiles` callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nsae.rundir import condition, provenance, write_json


def checkpoint_step(ckpt_path: str | None) -> int | None:
    """The global step a checkpoint was written at (None without one)."""
    if ckpt_path is None:
        return None
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    return int(ckpt["global_step"])


class RunFiles(Callback):
    """At the start of training: norm_stats.json (rank 0), and c_l and n_l to every logger
    (once: a resumed run keeps the values it logged before)."""

    def __init__(self, run_dir: Path, resumed: bool) -> None:
        self.run_dir, self.resumed = run_dir, resumed

    def on_fit_start(self, trainer: L.Trainer, module: Any) -> None:
        dm = trainer.datamodule
        if trainer.is_global_zero:
            write_json(
                self.run_dir / "norm_stats.json",
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

    unique = int(cfg.data.cache_tokens) if dm.cache is not None else None
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
        if dm.cache is None
        else {"key": dm.cache.key, "built_by_this_job": dm.cache_built},
        "fixed_inputs": None
        if dm.fixed is None
        else {"key": dm.fixed.key, "built_by_this_job": dm.fixed.built},
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
