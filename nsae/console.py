"""What a run prints: nsae's lines and labelled progress bars, not dependencies' noise.

Filters are narrow, each by its exact message: Lightning's advertisements ("Tip: ... try
installing ..."), its TPU/HPU availability lines, one deprecation warning raised inside
Lightning itself, and transformers' weight-loading bar. Every other warning still shows.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

NOISE = ("💡 Tip:", "TPU available:", "HPU available:")
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # raised by Lightning's own code
    r".*does not have many workers which may be a bottleneck.*",  # nsae harvests in-process
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in NOISE)


def quiet_dependencies() -> None:
    """Print each Lightning line once (through the root logger), minus the noise above."""
    import lightning.pytorch  # noqa: F401  (its import adds the handlers removed here)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    # A logger's filters apply to the records logged on it: those that log the noise.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def progress(total: int | None, desc: str, unit: str = "tokens", file: TextIO | None = None) -> Any:
    """A tqdm bar with a rate and an ETA for long work outside Lightning's loops (the cache
    build, the norm pass), written to `file` (stderr by default) by global rank 0 only, and
    only when that is a terminal: elsewhere it is disabled and prints nothing. Use as a
    context manager and call `.update(n)` with the units done."""
    from lightning.pytorch.utilities import rank_zero_only
    from tqdm import tqdm

    stream = sys.stderr if file is None else file
    shown = stream.isatty() and getattr(rank_zero_only, "rank", 0) == 0
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=stream,
        disable=not shown,
        leave=True,  # the finished bar stays: how long the step took, and at what rate
        dynamic_ncols=True,
    )


def progress_bar() -> Any | None:
    """Lightning's progress bar labelled by stage ("train" rather than "Epoch 0/-2"), on a
    terminal only (None elsewhere: logs and CI get no bars). Its validation and final
    evaluation bars (the splice metrics run there) show batches of contexts done, the rate
    and an ETA."""
    if not sys.stdout.isatty():
        return None
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
