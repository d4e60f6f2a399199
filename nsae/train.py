"""`python -m nsae.train`: harvest, train one SAE per layer, evaluate, export.

    python -m nsae.train                                   # the embedded default
    python -m nsae.train -m sae_type=none,normalized_sae normalization_method=none,input_norm

Writes into the run directory: config.yaml (resolved), norm_stats.json, checkpoints/,
layer_<i>/ (SAELens layout), metrics.json.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nsae.config import check_group_choices, validate
from nsae.errors import NsaeError
from nsae.launch import check_allocation, end_process_group, global_rank, local_ranks

log = logging.getLogger(__name__)
SAE_COMMON_KEYS = ("type", "expansion_factor", "init_b_dec")


def fail(err: Exception) -> None:
    print(f"nsae: error: {err}", file=sys.stderr, flush=True)
    if os.environ.get("SUBMITIT_EXECUTOR"):
        # In a submitit job an exception, not an exit, is what records the job as failed
        # (and what the launcher re-raises), also on clusters without Slurm accounting.
        raise NsaeError(str(err)) from None
    sys.exit(2)


def write_json(path: Path, obj: Any) -> None:
    """Write atomically: a reader sees the old file or the whole new one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def prepare_run_dir(cfg: DictConfig, run_dir: Path, rank: int = 0) -> str | None:
    """Refuse to overwrite an earlier run; with resume=true (or in a Slurm job that was
    requeued) return the checkpoint to resume, after checking that it was written under the
    same configuration. Every rank checks (what it checks changes only after training
    starts), so all ranks stop together; only rank 0 writes."""
    last = run_dir / "checkpoints" / "last.ckpt"
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0 and last.is_file()
    resume = bool(cfg.get("resume", False)) or requeued
    if (run_dir / "metrics.json").exists():
        raise NsaeError(
            f"{run_dir} already holds a finished run (metrics.json); choose another hydra.run.dir"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if resume:
        if not last.is_file():
            raise NsaeError(
                f"resume=true but {last} does not exist; valid: a run directory "
                "whose training was interrupted"
            )
        before = yaml.safe_load((run_dir / "config.yaml").read_text())
        changed = sorted(
            k
            for k in set(_flat(before)) | set(_flat(resolved))
            if k != "resume" and _flat(before).get(k) != _flat(resolved).get(k)
        )
        if changed:
            raise NsaeError(
                f"the checkpoint in {run_dir} was written under another "
                f"configuration (differs in {', '.join(changed[:5])})"
            )
        return str(last)
    if last.is_file():
        raise NsaeError(
            f"{run_dir} holds an interrupted run; continue it with resume=true, "
            "or choose another hydra.run.dir"
        )
    if rank == 0:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    return None


def cluster_plugins() -> list:
    """Under Slurm, requeue on timeout or preemption belongs to submitit (whose requeued
    job resumes from last.ckpt, see prepare_run_dir), so Lightning's own is switched off."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.")
    return {k.rstrip("."): v for k, v in out.items()}


def run(cfg: DictConfig, run_dir: Path, callbacks: list | None = None) -> dict[str, Any]:
    """Train and evaluate one condition on all of its ranks; return the metrics.json content
    (empty on ranks other than 0). `callbacks` are extra Lightning callbacks (benchmarks use
    them to watch a run)."""
    check_allocation(cfg.trainer)
    ckpt_path = prepare_run_dir(cfg, run_dir, global_rank())
    with local_ranks(cfg.trainer, run_dir, resume=ckpt_path is not None):
        try:
            return _fit_and_evaluate(cfg, run_dir, ckpt_path, callbacks)
        finally:
            end_process_group()


def _fit_and_evaluate(
    cfg: DictConfig, run_dir: Path, ckpt_path: str | None, callbacks: list | None
) -> dict[str, Any]:
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint
    from transformers import AutoConfig

    from nsae.data.datamodule import ActivationDataModule
    from nsae.export import export_saes
    from nsae.module import SAEModule
    from nsae.saes import build_sae

    try:
        model_cfg = AutoConfig.from_pretrained(cfg.source.name)
    except OSError as err:
        raise NsaeError(f"cannot load source model {cfg.source.name!r}: {err}") from None
    max_pos = getattr(model_cfg, "max_position_embeddings", None)
    layers = validate(cfg, model_cfg.num_hidden_layers, max_pos)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    d_model = model_cfg.hidden_size
    variant_kwargs = {k: v for k, v in cfg.sae.items() if k not in SAE_COMMON_KEYS}
    try:
        sae = build_sae(
            cfg.sae.type, len(layers), d_model, d_model * cfg.sae.expansion_factor, **variant_kwargs
        )
    except (ValueError, TypeError) as err:
        raise NsaeError(str(err)) from None
    module = SAEModule(
        sae,
        layers,
        cfg.loss.normalization_method,
        cfg.coeff,
        cfg.optim,
        cfg.metrics,
        cfg.sae.init_b_dec,
    )
    dm = ActivationDataModule(cfg.data, cfg.source, layers, cfg.seed)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    checkpoint = ModelCheckpoint(  # only last.ckpt, refreshed every validation interval
        dirpath=run_dir / "checkpoints",
        save_top_k=0,
        save_last=True,
        every_n_train_steps=cfg.trainer.val_check_interval,
    )
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=[checkpoint, *(callbacks or [])],
        default_root_dir=str(run_dir),
        plugins=cluster_plugins(),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    started = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    eval_seconds = time.perf_counter() - started
    log.info("final evaluation: %.1f s over %d held-out contexts", eval_seconds, len(dm.eval_ids))
    if not trainer.is_global_zero:
        return {}

    from nsae.data.norms import mean_norms
    from nsae.metrics import cross_layer_stats, density_histogram, per_layer_dict

    write_json(
        run_dir / "norm_stats.json", {"layers": dm.norm_stats, "coefficients": module.coefficients}
    )
    export_saes(
        sae,
        layers,
        module.eval_density,
        run_dir,
        {
            "model_name": cfg.source.name,
            "hook_site": cfg.source.hook_site,
            "context_size": cfg.data.context_size,
            "dataset_path": str(cfg.data.path),
        },
        overwrite=ckpt_path is not None,  # a resumed run replaces its own partial export
    )
    summary = {
        "condition": {
            "sae_type": cfg.sae.type,
            "normalization_method": cfg.loss.normalization_method,
            "coeff": cfg.coeff.mode,
            "alpha": cfg.coeff.alpha,
        },
        "source": cfg.source.name,
        "hook_site": cfg.source.hook_site,
        "layers": layers,
        "n_features": sae.n_features,
        "steps": trainer.global_step,
        "train_tokens": trainer.global_step * cfg.data.batch_size * trainer.world_size,
        "eval_tokens": -(-cfg.data.n_eval_tokens // cfg.data.context_size) * cfg.data.context_size,
        "eval_seconds": round(eval_seconds, 2),
        "coefficients": module.coefficients,
        "activation_cache": None
        if dm.cache is None
        else {"key": dm.cache.key, "built_by_this_job": dm.cache_built},
        "metrics": per_layer_dict(module.eval_results, layers),
        "feature_density_histogram": density_histogram(module.eval_density, layers),
        "cross_layer": cross_layer_stats(
            module.eval_results["l0"].tolist(), mean_norms(dm.norm_stats, layers).tolist()
        ),
    }
    write_json(run_dir / "metrics.json", summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN and (run_dir / "metrics.json").is_file():
        print(f"skipping {run_dir}: already finished (metrics.json)")  # a re-run sweep
        return
    try:
        summary = run(cfg, run_dir)
    except NsaeError as err:
        fail(err)
    except OmegaConfBaseException as err:  # e.g. no default alpha for a new sae_type
        fail(NsaeError(f"config: {str(err).splitlines()[0]}"))
    finally:
        if "wandb" in sys.modules:  # one W&B run per job, closed before the next job
            sys.modules["wandb"].finish()
    if summary:
        means = summary["metrics"]
        print(f"run dir: {run_dir}")
        print(
            "  ".join(
                f"{k}={means[k]['mean']:.4g}"
                for k in ("l0", "explained_variance", "mse")
                if k in means
            )
        )


def cli() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except NsaeError as err:
        fail(err)
    main()


if __name__ == "__main__":
    cli()
