"""Progress wherever the output goes.

On a terminal: tqdm bars with a rate and an ETA (Lightning's for training, validation and
the final evaluation; `progress` for the cache build, the norm pass and a cohort's steps).
Anywhere else (a file, a pipe, a Slurm log, a notebook cell, CI), where bars would print
nothing useful: one line every `console.progress_every_s` seconds (default 30) with the
count, the total, the rate, the elapsed time and an ETA (and, while training, the last
training L0 and explained variance), and one line when the work is done. Only global rank
0 reports. In a sweep every line carries its job's number (`nsae.console.tag_jobs`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from lightning.pytorch.callbacks import Callback

EVERY_S = 30.0  # seconds between two progress lines off a terminal (console.progress_every_s)


def configure(console: Any) -> None:
    """Take the interval from a job's `console` config node (None: keep the current one)."""
    global EVERY_S
    if console is not None and console.get("progress_every_s") is not None:
        EVERY_S = float(console.progress_every_s)


def clock(seconds: float) -> str:
    """0:01:05 for 65 s."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def amount(n: float) -> str:
    """12.3k, 4.1M: tqdm's unit scale."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def status(done: float, total: float | None, unit: str, elapsed: float, start: float = 0) -> str:
    """`120/400 steps (30%)  3.1 steps/s  elapsed 0:00:39  ETA 0:01:30` (`start`: the count
    at which timing began, e.g. a resumed run's first step)."""
    rate = (done - start) / elapsed if elapsed > 0 else 0.0
    text = f"{amount(done)}/{amount(total)} {unit}" if total else f"{amount(done)} {unit}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    text += f"  {amount(rate)} {unit}/s  elapsed {clock(elapsed)}"
    if total and rate > 0:
        text += f"  ETA {clock((total - done) / rate)}"
    return text


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class Lines:
    """`progress` off a terminal: a line every EVERY_S seconds and one at the end, on stdout
    (where a run's log goes). The same calls as a tqdm bar: `update(n)`, a context manager."""

    def __init__(self, total: int | None, desc: str, unit: str, shown: bool) -> None:
        self.total, self.desc, self.unit, self.shown = total, desc, unit, shown
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.shown and now - self.last >= EVERY_S:
            self.last = now
            self._print(status(self.n, self.total, self.unit, now - self.start))

    def close(self) -> None:
        if self.shown:
            elapsed = time.monotonic() - self.start
            rate = self.n / elapsed if elapsed > 0 else 0.0
            self._print(
                f"done, {amount(self.n)} {self.unit} in {clock(elapsed)} "
                f"({amount(rate)} {self.unit}/s)"
            )
            self.shown = False

    def _print(self, text: str) -> None:
        print(f"nsae: {self.desc}: {text}", file=sys.stdout, flush=True)

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()


def progress(total: int | None, desc: str, unit: str = "tokens", file: TextIO | None = None) -> Any:
    """Progress of long work outside Lightning's loops (the cache build, the norm pass, a
    cohort's steps), by global rank 0 only: a tqdm bar on `file` (stderr by default) when
    that is a terminal, `Lines` on stdout otherwise. Use as a context manager and call
    `.update(n)` with the units done."""
    stream = sys.stderr if file is None else file
    if not stream.isatty():
        return Lines(total, desc, unit, _rank_zero())
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=stream,
        disable=not _rank_zero(),
        leave=True,  # the finished bar stays: how long the step took, and at what rate
        dynamic_ncols=True,
    )


def progress_callback(tokens_per_step: int) -> Any:
    """The training run's progress: Lightning's bar, labelled by stage, on a terminal;
    elsewhere `ProgressLines`."""
    if not sys.stdout.isatty():
        return ProgressLines(tokens_per_step)
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StepBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
            super().on_train_epoch_start(trainer)
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.update(trainer.global_step)  # a resumed run's start
            self.train_progress_bar.set_description("train (steps)")

        @property
        def validation_description(self) -> str:
            return "validate (batches)"

        @property
        def test_description(self) -> str:  # the final evaluation, splice metrics included
            return "evaluate (batches)"

    return StepBar()


class ProgressLines(Callback):
    """Training and the final evaluation off a terminal: every EVERY_S seconds, the step, the
    total, tokens/s, the elapsed time, an ETA and the last logged training L0 and explained
    variance (1 - FVU); a line when training ends."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.start = self.last = time.monotonic()
        self.first_step = 0

    def on_train_start(self, trainer: Any, *_: Any) -> None:
        self.start = self.last = time.monotonic()
        self.first_step = trainer.global_step  # a resumed run times its own steps only

    def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
        now = time.monotonic()
        if not trainer.is_global_zero or now - self.last < EVERY_S:
            return
        self.last = now
        step, elapsed = trainer.global_step, now - self.start
        tokens = (step - self.first_step) * self.tokens_per_step * trainer.world_size
        text = status(step, trainer.max_steps, "steps", elapsed, self.first_step)
        text += f"  {amount(tokens / elapsed if elapsed else 0)} tokens/s"
        found = trainer.callback_metrics
        if "train/l0/mean" in found:
            text += f"  l0={float(found['train/l0/mean']):.4g}"
        if "train/fvu/mean" in found:
            text += f"  explained_variance={1 - float(found['train/fvu/mean']):.4g}"
        print(f"nsae: train: {text}", flush=True)

    def on_train_end(self, trainer: Any, *_: Any) -> None:
        if trainer.is_global_zero:
            elapsed = time.monotonic() - self.start
            done = trainer.global_step - self.first_step
            print(f"nsae: train: done, {done} steps in {clock(elapsed)}", flush=True)

    def on_test_start(self, trainer: Any, *_: Any) -> None:
        self.start = self.last = time.monotonic()

    def on_test_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        now = time.monotonic()
        if not trainer.is_global_zero or now - self.last < EVERY_S:
            return
        self.last = now
        total = sum(trainer.num_test_batches)
        text = status(batch_idx + 1, total, "batches", now - self.start)
        print(f"nsae: evaluate: {text}", flush=True)
