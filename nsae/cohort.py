"""hydra/launcher=nsae_bank: the jobs of a sweep that see the same activation stream train
together, in one process, from one harvest.

    python -m nsae.train -m hydra/launcher=nsae_bank data.cache=false \\
        sae_type=none,normalized_sae normalization_method=none,input_norm,input_norm_squared

Jobs see the same stream when their source, data, layers, seed and trainer sections are
equal and they start at the same step (new jobs at 0; a resumed job at its checkpoint's
step): they differ only in the SAE, the loss, the coefficient, the optimizer or the
metrics. Each such group is a cohort: one thread per job, each running the job exactly as
the default launcher would (`nsae.job.run`: its own Lightning trainer, checkpoints, logs,
final evaluation, export and metrics.json), while the LM, the fixed inputs and the training
batches are computed once for the cohort (`nsae.data.shared.CohortShare`) and each job
draws its training noise from its own generator (`nsae.rng`). So each job's run directory
holds what it would hold had the job run alone. (A cohort is a group of jobs; the "SAE
bank" elsewhere is one job's SAEs of all layers, batched.)

A cohort whose estimated memory (`job_bytes` per job plus `shared_bytes`) exceeds the
device's free memory (or `hydra.launcher.memory_gb`) is split into cohorts that fit, and the
split is printed. Cohorts run one after another; on a CPU each of a cohort's jobs gets
max(1, cores // jobs) threads. Ctrl-C stops every job of the running cohort at its current
step (re-run the same command to continue), as under hydra/launcher=parallel.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nsae.errors import NsaeError, WorkersInterrupted, describe
from nsae.launchers import job_problem
from nsae.memory import available_memory, job_bytes, max_lead, shared_bytes
from nsae.rundir import RunDir

STREAM_KEYS = ("source", "data", "seed", "trainer")


@dataclass
class CohortJob:
    num: int
    cfg: DictConfig  # the task config, resolved
    hydra_cfg: DictConfig  # the job's sweep config (for Hydra's JobReturn)
    run_dir: Path
    overrides: list[str]
    start: int | str = 0  # the step training starts at, or why the job will not train
    key: str = field(default="", repr=False)


def prepare(
    hydra_context: Any, config: DictConfig, job_overrides: Any, initial_job_idx: int
) -> list[CohortJob]:
    """Each job's composed config, run directory and overrides, as Hydra's `run_job`
    makes them (its interpolations resolved now, while HydraConfig describes this job)."""
    from hydra.core.hydra_config import HydraConfig

    jobs = []
    for i, overrides in enumerate(job_overrides):
        num = initial_job_idx + i
        sweep_cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_cfg):
            sweep_cfg.hydra.job.id = f"bank_{num}"
            sweep_cfg.hydra.job.num = num
        HydraConfig.instance().set_config(sweep_cfg)
        sweep_dir = Path(str(sweep_cfg.hydra.sweep.dir))
        run_dir = (sweep_dir / str(sweep_cfg.hydra.sweep.subdir)).absolute()
        with read_write(sweep_cfg.hydra.runtime), open_dict(sweep_cfg.hydra.runtime):
            sweep_cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(sweep_cfg)
        task_cfg = OmegaConf.create(OmegaConf.to_container(sweep_cfg, resolve=False))
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        task_cfg = OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=True))
        OmegaConf.set_struct(task_cfg, True)
        task_overrides = list(OmegaConf.to_container(sweep_cfg.hydra.overrides.task))
        jobs.append(CohortJob(num, task_cfg, sweep_cfg, run_dir, task_overrides))  # type: ignore[arg-type]
    for job in jobs:
        job.start = start_step(job)
        job.key = stream_key(job)
    return jobs


def start_step(job: CohortJob) -> int | str:
    """The step a job's training starts at (0, or a resumed checkpoint's), or, for a job
    that will not share a stream, why not ("skip": already finished; "error: ...")."""
    resolved = OmegaConf.to_container(job.cfg, resolve=True)
    rd = RunDir(job.run_dir)
    try:
        plan = rd.plan(resolved, True, bool(job.cfg.get("resume", False)))  # type: ignore[arg-type]
    except NsaeError as err:
        return f"error: {err}"
    if plan == "resume":
        return rd.checkpoint_step() or 0
    return plan if plan == "skip" else 0


def stream_key(job: CohortJob) -> str:
    """Jobs with equal keys see the same training batches (and share a cohort)."""
    if isinstance(job.start, str):  # alone: nothing to share
        return f"{job.start}:{job.run_dir}"
    fields = {k: OmegaConf.select(job.cfg, k) for k in STREAM_KEYS}
    fields = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
              for k, v in fields.items()}  # fmt: skip
    return json.dumps({**fields, "start": job.start}, sort_keys=True, default=str)


def on_gpu(cfg: Any) -> bool:
    return available_memory(str(cfg.trainer.get("accelerator", "auto")))[1] == "free GPU memory"


def plan_cohorts(
    jobs: list[CohortJob], memory_gb: float | None
) -> tuple[list[list[CohortJob]], list[str]]:
    """Jobs grouped by stream key (in sweep order), each group split into cohorts that fit
    the memory budget; and one line per split."""
    groups: dict[str, list[CohortJob]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    cohorts, notes = [], []
    for group in groups.values():
        cfg = group[0].cfg
        have, what = available_memory(str(cfg.trainer.get("accelerator", "auto")))
        # (without a budget: 80% of what is free, headroom for the LM and the evaluation)
        budget = int(memory_gb * 2**30) if memory_gb is not None else int(0.8 * have)
        what = "hydra.launcher.memory_gb" if memory_gb is not None else f"80% of {what}"
        each = max(job_bytes(j.cfg) for j in group)
        fits = max(1, (budget - shared_bytes(cfg)) // each)
        n = -(-len(group) // fits)
        sizes = [len(group) // n + (i < len(group) % n) for i in range(n)]
        start = 0
        for size in sizes:
            cohorts.append(group[start : start + size])
            start += size
        if n > 1:
            notes.append(
                f"nsae: cohort: jobs {', '.join(str(j.num) for j in group)} share a stream but "
                f"need ~{each / 2**30:.2f} GiB each, with {budget / 2**30:.2f} GiB for them "
                f"({what}): split into {n} cohorts of {', '.join(map(str, sizes))} jobs"
            )
    return cohorts, notes


def run_cohort(cohort: list[CohortJob], label: str) -> list[BaseException]:
    """Train one cohort's jobs, one thread each; return the interruptions they raised."""
    from lightning.pytorch.callbacks import Callback

    from nsae import rng
    from nsae.data.shared import CohortShare
    from nsae.outcome import record_failure, run_and_report
    from nsae.progress import configure, progress

    share = CohortShare([str(j.run_dir) for j in cohort], max_lead(cohort[0].cfg))
    interrupted: list[BaseException] = []
    steps = sum(int(j.cfg.trainer.max_steps) - (j.start if isinstance(j.start, int) else 0)
                for j in cohort)  # fmt: skip
    configure(cohort[0].cfg.get("console"))
    bar = progress(steps, label, "steps")
    bar_lock = threading.Lock()

    class CohortJobCallback(Callback):
        """The cohort's progress bar; and a job whose training ended leaves the stream."""

        def __init__(self, name: str) -> None:
            self.name = name

        def on_train_batch_end(self, *_: Any) -> None:
            with bar_lock:
                bar.update(1)

        def on_train_end(self, *_: Any) -> None:
            share.leave(self.name)

    def work(job: CohortJob) -> None:
        try:
            run_and_report(
                job.cfg,
                RunDir(job.run_dir),
                True,
                "train",
                in_worker=True,
                overrides=job.overrides,
                share=share,
                callbacks=[CohortJobCallback(str(job.run_dir))],
            )
        except WorkersInterrupted as err:
            interrupted.append(err)
        except BaseException as err:  # (run_and_report records a job's own failure)
            record_failure(RunDir(job.run_dir), describe(err))
        finally:
            share.leave(str(job.run_dir))
            rng.release()

    threads_before = torch.get_num_threads()
    if not on_gpu(cohort[0].cfg):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(cohort)))
    threads = [
        threading.Thread(target=work, args=(job,), name=f"nsae-job-{job.num}") for job in cohort
    ]
    try:
        with bar:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
    finally:
        share.close()
        torch.set_num_threads(threads_before)
    return interrupted


def run_cohorts(cohorts: list[list[CohortJob]]) -> None:
    """Run the cohorts in turn; stop the sweep when a job was interrupted."""
    from nsae.sweep import sweep_stop_requested

    for i, cohort in enumerate(cohorts, 1):
        if sweep_stop_requested():
            raise WorkersInterrupted("the sweep was interrupted")
        label = f"cohort {i}/{len(cohorts)} ({len(cohort)} job{'s' * (len(cohort) != 1)})"
        print(f"nsae: {label}: jobs {', '.join(str(j.num) for j in cohort)}", flush=True)
        interrupted = run_cohort(cohort, label)
        if interrupted:
            raise WorkersInterrupted(str(interrupted[0]))


def launch(
    hydra_context: Any,
    config: DictConfig,
    job_overrides: Any,
    initial_job_idx: int,
    memory_gb: float | None,
) -> list[Any]:
    """The launcher's work: prepare, group and split the jobs, run the cohorts in turn, and
    return Hydra's JobReturns (a failed job leaves its failed.json)."""
    from hydra.core.utils import JobReturn, JobStatus

    from nsae.console import tag_jobs

    jobs = prepare(hydra_context, config, job_overrides, initial_job_idx)
    for job in jobs:
        problem = job_problem("cohort", job.cfg)
        if problem:
            raise NsaeError(f"job {job.num}: {problem}")
    cohorts, notes = plan_cohorts(jobs, memory_gb)
    for note in notes:
        print(note, flush=True)
    with tag_jobs(None):  # each job's thread tags its lines
        run_cohorts(cohorts)
    return [
        JobReturn(
            overrides=job.overrides,
            cfg=job.cfg,
            hydra_cfg=job.hydra_cfg,
            working_dir=os.getcwd(),
            task_name="train",
            status=JobStatus.COMPLETED,
            _return_value=None,
        )
        for job in jobs
    ]
