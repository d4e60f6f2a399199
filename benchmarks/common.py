"""Helpers shared by the benchmarks: compose nsae's config, time a run's training loop or a
whole sweep from the command line, and the bare PyTorch SAE step the baselines use."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nsae.config import CONF_DIR
from nsae.job import run
from nsae.loss import SAELoss
from nsae.saes import SAE


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def schedule(steps: int) -> list[str]:
    """The grid's schedule (500 steps, validation half-way) scaled to `steps`."""
    return [f"trainer.max_steps={steps}", f"trainer.val_check_interval={max(steps // 2, 1)}"]


def timed_sweep(tmp: str, name: str, *overrides: str) -> float:
    """Wall seconds of `python -m nsae.train -m OVERRIDES` as a user runs it, with its own
    cache directory (`<tmp>/<name>_cache`, empty at first) and sweep directory
    (`<tmp>/<name>`)."""
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nsae.train",
            "-m",
            *overrides,
            f"data.cache_dir={tmp}/{name}_cache",
            f"hydra.sweep.dir={tmp}/{name}",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


class FitTimer(L.Callback):
    """Wall time of the training loop alone, from step `skip` to the end of fit (no set-up,
    final evaluation or export); `steps` is the number of steps timed."""

    def __init__(self, skip: int = 0) -> None:
        self.skip, self.t0, self.t1, self.steps = skip, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.skip:
            self.t0, self.first = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, *args) -> None:
        self.t1, self.steps = time.perf_counter(), trainer.global_step - self.first

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


def timed_run(cfg: DictConfig, skip: int = 0, watch: list | None = None) -> FitTimer:
    """Run one job in this process into a temporary directory, with the `watch` callbacks
    too; return its training timer."""
    timer = FitTimer(skip)
    with tempfile.TemporaryDirectory() as out:
        run(cfg, Path(out), callbacks=[timer, *(watch or [])])
    return timer


def bare_step(sae: SAE, loss_fn: SAELoss, opt: torch.optim.Optimizer, x_BLD: torch.Tensor) -> None:
    """One SAE-bank step with no framework: loss, backward, decoder constraint, Adam."""
    loss_fn(x_BLD, sae.train_forward(x_BLD)).total.backward()
    sae.before_optimizer_step()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sae.after_optimizer_step()
