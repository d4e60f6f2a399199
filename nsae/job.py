"""Running one job: resolve what it needs once, train one SAE per layer, evaluate, export.

`run(cfg, run_dir)` is the whole job on all of its ranks (used by the Hydra entry and the
cohort launcher through `nsae.outcome.run_and_report`, which says how the job ended, and by
the benchmarks). What a job needs to know about its source (layers, width, beta exponent, plan,
checkpoint) is resolved once, in `Job.resolve`, and passed down.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nsae import rng
from nsae.constants import SAE_COMMON_KEYS
from nsae.errors import Interrupted, NsaeError, describe
from nsae.rundir import Plan, RunDir, detach_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One job, resolved: its config, run directory and plan, and its source's facts."""

    cfg: DictConfig
    run_dir: RunDir
    multirun: bool
    plan: Plan
    layers: list[int]
    d_model: int
    k: float | None  # the effective beta exponent (None in alpha mode)
    resolved: dict[str, Any]  # cfg as plain data, interpolations resolved

    @classmethod
    def resolve(cls, cfg: DictConfig, run_dir: RunDir, multirun: bool) -> Job:
        from nsae.checks import validate
        from nsae.config import beta_exponent_of, source_shape

        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(resolved, dict)
        plan = run_dir.plan(resolved, multirun, bool(cfg.get("resume", False)))
        if plan == "skip":  # (nothing to train: the source is not even looked up)
            return cls(cfg, run_dir, multirun, plan, [], 0, None, resolved)
        shape = source_shape(cfg.source)
        layers = validate(cfg, shape)
        k = beta_exponent_of(cfg)
        return cls(cfg, run_dir, multirun, plan, layers, shape[2], k, resolved)

    @property
    def ckpt_path(self) -> str | None:
        return str(self.run_dir.checkpoint) if self.plan == "resume" else None

    @property
    def skips_as_alpha(self) -> bool:
        """A sweep's coeff=beta job whose exponent is 0 is its alpha job: not trained."""
        return self.multirun and self.k == 0 and self.cfg.coeff.get("k") is None


def run(
    cfg: DictConfig,
    run_dir: Path | RunDir,
    callbacks: list | None = None,
    multirun: bool = False,
    log_name: str = "train",
    overrides: list[str] | None = None,
    share: Any = None,
) -> dict[str, Any]:
    """Run one job on all of its ranks; return the metrics.json content (empty on ranks
    other than 0 and for a job that is skipped). `callbacks` are extra Lightning callbacks
    (benchmarks use them to watch a run). `overrides`: the job's command-line overrides
    (default: Hydra's). `share`: in a cohort (`nsae.cohort`), what this job shares with the
    cohort's other jobs, which run in other threads of this process."""
    from nsae import progress
    from nsae.ranks import check_allocation, end_process_group, global_rank, local_ranks

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    progress.configure(cfg.get("console"))
    check_allocation(cfg.trainer)
    job = Job.resolve(cfg, rd, multirun)
    if job.plan == "skip":
        print(f"skipping {rd.path}: already finished with the same configuration")
        return {"skipped": True}
    rank = global_rank()
    if rank == 0:
        if overrides is None:
            overrides = hydra_overrides()
        rd.start(job.plan, job.resolved, overrides)
        if job.skips_as_alpha:
            return rd.skip_as_alpha(job.resolved)
    elif job.skips_as_alpha:
        return {}
    handler = rd.attach_log(log_name, this_thread_only=share is not None)
    try:
        with local_ranks(cfg.trainer, rd, resume=job.ckpt_path is not None):
            try:
                return fit_and_evaluate(job, callbacks, share)
            finally:
                end_process_group()
    except Interrupted:
        raise
    except Exception as err:
        if rank == 0:
            rd.write(rd.failed, {"error": describe(err)})
        raise
    finally:
        detach_log(handler)


def hydra_overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def cluster_plugins() -> list:
    """Under Slurm, requeue on timeout or preemption belongs to submitit (whose requeued
    job resumes from last.ckpt, see `RunDir.plan`), so Lightning's own is off."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def fit_and_evaluate(job: Job, callbacks: list | None, share: Any = None) -> dict[str, Any]:
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar

    from nsae.data.datamodule import ActivationDataModule
    from nsae.evaluation import zero_ablation
    from nsae.interrupt import GracefulStop
    from nsae.loggers import build_loggers
    from nsae.module import SAEModule
    from nsae.progress import progress_callback
    from nsae.record import RunFiles, summarize
    from nsae.saes import build_sae
    from nsae.sweep import sweep_stop_requested

    cfg, rd = job.cfg, job.run_dir
    variant_kwargs = {k: v for k, v in cfg.sae.items() if k not in SAE_COMMON_KEYS}
    with rng.job_rng(owned=share is not None):  # in a cohort, the job's own generator
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        try:
            sae = build_sae(
                cfg.sae.type,
                len(job.layers),
                job.d_model,
                job.d_model * cfg.sae.expansion_factor,
                **variant_kwargs,
            )
        except (ValueError, TypeError) as err:
            raise NsaeError(str(err)) from None
    module = SAEModule(
        sae,
        job.layers,
        cfg.loss.normalization_method,
        cfg.coeff,
        cfg.optim,
        cfg.metrics,
        cfg.sae.init_b_dec,
        cfg.sae.get("resample"),
    )
    dm = ActivationDataModule(
        cfg.data, cfg.source, job.layers, cfg.seed, share, str(rd.path), zero_ablation
    )
    resume_step = rd.checkpoint_step() if job.ckpt_path else None
    loggers = build_loggers(cfg.get("logger"), rd.path, resume_step)
    for logger in loggers:
        logger.log_hyperparams(job.resolved)
    checkpoint = ModelCheckpoint(  # only last.ckpt, refreshed every validation interval
        dirpath=rd.checkpoints,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=cfg.trainer.val_check_interval,
    )
    # (a cohort shows one bar, or one line, for all of its jobs)
    bar = progress_callback(cfg.data.batch_size) if share is None else None
    stop = GracefulStop(rd, job.multirun, sweep_stop_requested)
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        enable_progress_bar=isinstance(bar, ProgressBar),
        callbacks=[
            checkpoint,
            RunFiles(rd, resumed=job.ckpt_path is not None),
            stop,
            *([bar] if bar else []),
            *(callbacks or []),
        ],
        default_root_dir=str(rd.path),
        plugins=cluster_plugins(),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=job.ckpt_path)
    stop.check()
    started = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    eval_seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return {}
    log.info("final evaluation: %.1f s over %d held-out contexts", eval_seconds, len(dm.eval_ids))
    summary = summarize(cfg, trainer, module, dm, job.layers, job.k, eval_seconds)
    if dm.synthetic is not None:  # the ground truth travels with the run
        dm.synthetic.save(rd.synthetic)
    try:
        export_results(rd, sae, job, module, summary)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        then = (  # the run is not marked finished: what is lost is the final evaluation
            f"finish the run with resume=true hydra.run.dir={rd.path}"
            if rd.checkpoint.is_file()
            else "re-run the command"
        )
        raise NsaeError(
            f"no space left on device while writing the results into {rd.path}; free some "
            f"space, then {then}"
        ) from None
    return summary


def export_results(rd: RunDir, sae: Any, job: Job, module: Any, summary: dict[str, Any]) -> None:
    """The exported SAEs, then metrics.json, which marks the run finished."""
    from nsae.export import export_saes

    cfg = job.cfg
    export_saes(
        sae,
        job.layers,
        module.eval_density,
        rd.path,
        {
            "model_name": summary["provenance"]["source"],
            "hook_site": cfg.source.get("hook_site", "resid_post"),
            "context_size": cfg.data.context_size,
            "dataset_path": summary["provenance"]["dataset"],
            "provenance": summary["provenance"],
        },
        overwrite=True,  # RunDir.plan let only this job's own (unfinished) files be here
    )
    rd.write(rd.metrics, summary)
