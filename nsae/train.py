"""`python -m nsae.train`: harvest, train one SAE per layer, evaluate, export.

    python -m nsae.train                                   # the embedded default
    python -m nsae.train -m sae_type=none,normalized_sae normalization_method=none,input_norm

Before Hydra starts, `nsae.preflight` composes and checks every job (a bad job, or one
that would touch an earlier run, stops the command with one line). Each job then writes its
run directory (see `nsae.rundir`). In a sweep a job that fails leaves `failed.json` and the
others go on; the sweep ends with a summary and a non-zero exit if any job failed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nsae import rng
from nsae.config import beta_exponent_of, check_group_choices, source_shape, validate
from nsae.console import quiet_dependencies
from nsae.data.shared import BankShare
from nsae.errors import NsaeError, describe
from nsae.interrupt import GracefulStop, Interrupted, WorkersInterrupted
from nsae.launch import (
    check_allocation,
    end_process_group,
    external_ranks,
    global_rank,
    local_ranks,
)
from nsae.preflight import job_plan, preflight
from nsae.rundir import attach_log_file, detach_log_file, skip_as_alpha, write_json
from nsae.sweep import (
    OUTCOMES,
    let_workers_stop,
    outcomes_from_dirs,
    stop_marker,
    sweep_stop_requested,
    sweep_summary,
)

log = logging.getLogger(__name__)
SAE_COMMON_KEYS = ("type", "expansion_factor", "init_b_dec", "resample")


def fail(err: Exception) -> None:
    print(f"nsae: error: {err}", file=sys.stderr, flush=True)
    if os.environ.get("SUBMITIT_EXECUTOR"):
        # In a submitit job an exception, not an exit, is what records the job as failed
        # (and what the launcher re-raises), also on clusters without Slurm accounting.
        raise NsaeError(str(err)) from None
    sys.exit(2)


def cluster_plugins() -> list:
    """Under Slurm, requeue on timeout or preemption belongs to submitit (whose requeued
    job resumes from last.ckpt, see nsae.preflight.job_plan), so Lightning's own is off."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def run(
    cfg: DictConfig,
    run_dir: Path,
    callbacks: list | None = None,
    multirun: bool = False,
    log_name: str = "train",
    overrides: list[str] | None = None,
    share: BankShare | None = None,
) -> dict[str, Any]:
    """Run one job on all of its ranks; return the metrics.json content (empty on ranks
    other than 0 and for a job that is skipped). `callbacks` are extra Lightning callbacks
    (benchmarks use them to watch a run). `overrides`: the job's command-line overrides
    (default: Hydra's). `share`: in a bank (`nsae.bank`), what this job shares with the
    bank's other jobs, which run in other threads of this process."""
    check_allocation(cfg.trainer)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    plan = job_plan(resolved, run_dir, multirun, bool(cfg.get("resume", False)))
    if plan == "skip":
        print(f"skipping {run_dir}: already finished with the same configuration")
        return {"skipped": True}
    layers = validate(cfg)
    rank = global_rank()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "failed.json").unlink(missing_ok=True)
        if plan == "new":
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
            if overrides is None and HydraConfig.initialized():
                overrides = list(HydraConfig.get().overrides.task)
            if overrides is not None:
                (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    k = beta_exponent_of(cfg)
    if multirun and k == 0 and cfg.coeff.get("k") is None:
        return skip_as_alpha(cfg, run_dir) if rank == 0 else {}
    handler = attach_log_file(run_dir, log_name, this_thread_only=share is not None)
    ckpt_path = str(run_dir / "checkpoints" / "last.ckpt") if plan == "resume" else None
    try:
        with local_ranks(cfg.trainer, run_dir, resume=ckpt_path is not None):
            try:
                return _fit_and_evaluate(
                    cfg, run_dir, layers, ckpt_path, callbacks, multirun, share
                )
            finally:
                end_process_group()
    except Interrupted:
        raise
    except Exception as err:
        if rank == 0:
            write_json(run_dir / "failed.json", {"error": describe(err)})
        raise
    finally:
        detach_log_file(handler)


def _fit_and_evaluate(
    cfg: DictConfig,
    run_dir: Path,
    layers: list[int],
    ckpt_path: str | None,
    callbacks: list | None,
    multirun: bool = False,
    share: BankShare | None = None,
) -> dict[str, Any]:
    import lightning as L
    from hydra.utils import instantiate

    from nsae.console import progress_bar
    from nsae.data.datamodule import ActivationDataModule
    from nsae.export import export_saes
    from nsae.loggers import build_loggers
    from nsae.module import SAEModule
    from nsae.saes import build_sae
    from nsae.summary import RunFiles, checkpoint_step, summarize

    d_model = source_shape(cfg.source)[2]
    variant_kwargs = {k: v for k, v in cfg.sae.items() if k not in SAE_COMMON_KEYS}
    with rng.job_rng(owned=share is not None):  # in a bank, the job's own generator after
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        try:
            sae = build_sae(
                cfg.sae.type,
                len(layers),
                d_model,
                d_model * cfg.sae.expansion_factor,
                **variant_kwargs,
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
        cfg.sae.get("resample"),
    )
    dm = ActivationDataModule(cfg.data, cfg.source, layers, cfg.seed, share, str(run_dir))
    resume_step = checkpoint_step(ckpt_path)
    loggers = build_loggers(cfg.get("logger"), run_dir, resume_step)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(  # only last.ckpt, refreshed every validation interval
        dirpath=run_dir / "checkpoints",
        save_top_k=0,
        save_last=True,
        every_n_train_steps=cfg.trainer.val_check_interval,
    )
    bar = progress_bar() if share is None else None  # (a bank shows one bar for its jobs)
    stop = GracefulStop(run_dir, multirun, sweep_stop_requested)
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        enable_progress_bar=bar is not None,
        callbacks=[
            checkpoint,
            RunFiles(run_dir, resumed=ckpt_path is not None),
            stop,
            *([bar] if bar else []),
            *(callbacks or []),
        ],
        default_root_dir=str(run_dir),
        plugins=cluster_plugins(),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    stop.check()
    started = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    eval_seconds = time.perf_counter() - started
    log.info("final evaluation: %.1f s over %d held-out contexts", eval_seconds, len(dm.eval_ids))
    if not trainer.is_global_zero:
        return {}
    summary = summarize(cfg, trainer, module, dm, layers, beta_exponent_of(cfg), eval_seconds)
    if dm.synthetic is not None:  # the ground truth travels with the run
        dm.synthetic.save(run_dir)
    export_saes(
        sae,
        layers,
        module.eval_density,
        run_dir,
        {
            "model_name": summary["provenance"]["source"],
            "hook_site": cfg.source.get("hook_site", "resid_post"),
            "context_size": cfg.data.context_size,
            "dataset_path": summary["provenance"]["dataset"],
            "provenance": summary["provenance"],
        },
        overwrite=True,  # job_plan let only this job's own (unfinished) files be here
    )
    write_json(run_dir / "metrics.json", summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_dependencies()  # again: Hydra has configured logging since cli() ran
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    in_worker = "joblib" in str(hc.launcher.get("_target_", ""))  # hydra/launcher=parallel
    if in_worker:
        # Ctrl-C must not break the worker between jobs (loky would fail the whole pool):
        # a job stops on GracefulStop's handler while it trains, or on the sweep's stop file.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if sweep_stop_requested():
            raise WorkersInterrupted(f"{run_dir.name}: not started, the sweep was interrupted")
    run_and_report(cfg, run_dir, multirun, hc.job.name, in_worker)


def run_and_report(
    cfg: DictConfig,
    run_dir: Path,
    multirun: bool,
    log_name: str,
    in_worker: bool = False,
    **run_kwargs: Any,
) -> None:
    """`run` one job and report how it ended: its outcome in OUTCOMES (a sweep's summary),
    and its headline metrics on stdout. in_worker: the job runs apart from the sweep's own
    process or thread (hydra/launcher=parallel or nsae_bank), and an interrupted job
    raises WorkersInterrupted to it."""
    try:
        summary = run(cfg, run_dir, multirun=multirun, log_name=log_name, **run_kwargs)
    except Interrupted as err:  # stops the whole command, sweep included
        print(f"nsae: {err}", file=sys.stderr, flush=True)
        if in_worker:
            raise WorkersInterrupted(str(err)) from None  # to the sweep's process
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C before training (Lightning exits 1)
        if in_worker:
            raise WorkersInterrupted(f"{run_dir.name}: stopped before training") from None
        raise
    except Exception as err:
        if os.environ.get("NSAE_DEBUG"):
            traceback.print_exc()
        message = describe(err)
        if multirun and not os.environ.get("SUBMITIT_EXECUTOR"):
            print(f"nsae: error: {run_dir.name}: {message}", file=sys.stderr, flush=True)
            OUTCOMES.append((run_dir, "failed", message))
            return
        fail(NsaeError(message))
        return
    finally:
        if "wandb" in sys.modules:  # one W&B run per job, closed before the next job
            sys.modules["wandb"].finish()
    OUTCOMES.append((run_dir, "skipped" if summary.get("skipped") else "finished", None))
    if summary and not summary.get("skipped"):
        means = summary["metrics"]
        print(
            f"run dir: {run_dir}\n"
            + "  ".join(
                f"{k}={means[k]['mean']:.4g}"
                for k in ("l0", "explained_variance", "mse")
                if k in means
            ),
            flush=True,
        )


def check_config_name(argv: list[str]) -> None:
    """`--config-name NAME` (or -cn) must name a config in conf/ (unless --config-path)."""
    from nsae.config import CONF_DIR

    if any(a.split("=")[0] in ("--config-path", "-cp") for a in argv):
        return
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--config-name", "-cn"):
            name = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if not (CONF_DIR / f"{name}.yaml").is_file():
                names = ", ".join(sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
                raise NsaeError(f"--config-name {name}: no such config; valid: {names}")


def cli() -> None:
    quiet_dependencies()
    argv = sys.argv[1:]
    checked = None
    try:
        check_config_name(argv)
        check_group_choices(argv)
        if not external_ranks():
            checked = preflight(argv)
    except NsaeError as err:
        fail(err)
    # hydra/launcher=parallel (jobs in worker processes) or nsae_bank (in threads)
    workers = checked is not None and any(k in checked.launcher for k in ("joblib", "NsaeBank"))
    if workers:  # a stopped worker's WorkersInterrupted reaches this process's except
        signal.signal(signal.SIGINT, let_workers_stop)
        os.environ["HYDRA_FULL_ERROR"] = "1"
        os.environ["NSAE_SWEEP_PID"] = str(os.getpid())
    try:
        try:
            main()
        except Exception as err:
            if workers and stop_marker(os.getpid()).exists():
                # Ctrl-C hit a worker between jobs (loky: BrokenProcessPool): stopped all the same
                raise WorkersInterrupted(str(err)) from None
            raise
    except (KeyboardInterrupt, WorkersInterrupted):
        if workers:
            outcomes_from_dirs(checked.plans)  # type: ignore[union-attr]
            sweep_summary()
            print("nsae: interrupted: re-run the same command to continue", file=sys.stderr)
        else:
            print("nsae: interrupted before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
    finally:
        stop_marker(os.getpid()).unlink(missing_ok=True)
    if workers:
        outcomes_from_dirs(checked.plans)  # type: ignore[union-attr]
    if len(OUTCOMES) > 1 or any(outcome == "failed" for _, outcome, _ in OUTCOMES):
        sys.exit(sweep_summary())


if __name__ == "__main__":
    cli()
