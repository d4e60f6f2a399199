"""Ctrl-C and SIGTERM (e.g. Slurm preemption): stop at the end of the current step, save a
checkpoint there, and say how to resume. A second Ctrl-C exits at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from nsae.errors import Interrupted
from nsae.rundir import RunDir


class GracefulStop(Callback):
    """Turns the first SIGINT/SIGTERM into a checkpoint at the end of the current step."""

    def __init__(
        self,
        run_dir: RunDir,
        multirun: bool = False,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        """stop_requested: polled at every step's end (a parallel sweep's stop file), so a
        job whose signal came before training still stops at its first step."""
        self.run_dir, self.multirun = run_dir, multirun
        self.stop_requested = stop_requested
        self.signum: int | None = None
        self.saved_step: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        # The second signal is not caught: Ctrl-C raises KeyboardInterrupt, SIGTERM kills.
        signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)

    def on_train_start(self, trainer: Any, module: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
        if self.signum is None and self.stop_requested is not None and self.stop_requested():
            self.signum = signal.SIGINT
        requested = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            flag = torch.tensor(float(requested), device=trainer.strategy.root_device)
            requested = bool(trainer.strategy.reduce(flag, reduce_op="max") > 0)
        if not requested or self.saved_step is not None:
            return
        self.signum = self.signum or signal.SIGTERM
        trainer.save_checkpoint(self.run_dir.checkpoint)
        self.saved_step = trainer.global_step
        trainer.should_stop = True

    def on_train_end(self, trainer: Any, module: Any) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def check(self) -> None:
        """After fit: raise `Interrupted` with the resume command if a signal stopped it."""
        if self.saved_step is None or self.signum is None:
            return
        from nsae.ranks import hydra_quote

        name = signal.Signals(self.signum).name
        where = hydra_quote(str(self.run_dir.path))
        how = (
            "re-run the same sweep command (finished jobs are skipped, this one resumes)"
            if self.multirun
            else f"python -m nsae.train resume=true hydra.run.dir={where} (and the same overrides)"
        )
        raise Interrupted(
            f"stopped by {name} at step {self.saved_step}; checkpoint saved. Resume: {how}",
            self.signum,
        )
