"""What a run prints: nsae's lines, not dependencies' noise, and in a sweep each line
tagged with its job (progress lines and bars: `nsae.progress`).

Filters are narrow, each by its exact message: Lightning's advertisements ("Tip: ... try
installing ..."), its TPU/HPU availability lines, its accelerator banner after the first
in a process, one deprecation warning raised inside Lightning itself, joblib's launch line
(the repr of its Parallel object), and transformers' weight-loading bar. Every other warning
still shows.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NOISE = ("💡 Tip:", "TPU available:", "HPU available:", "Joblib.Parallel(")
ONCE = ("GPU available:",)  # Lightning's banner, once per Trainer: shown once per process
JOBLIB_LOGGER = "hydra_plugins.hydra_joblib_launcher._core"
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # raised by Lightning's own code
    r".*does not have many workers which may be a bottleneck.*",  # nsae harvests in-process
    # nsae's Slurm jobs go through hydra/launcher=slurm (srun inside); outside it the hint
    # to prepend srun is noise on every machine that has Slurm installed
    r"The `srun` command is available on your system but is not used",
)


SEEN: set[str] = set()  # the ONCE messages already shown in this process


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if any(msg.startswith(o) for o in ONCE):
            if msg in SEEN:
                return False
            SEEN.add(msg)
        return not any(n in msg for n in NOISE)


def quiet_launcher() -> None:
    """In the command's own process, before Hydra launches: no joblib launch line."""
    _filter(logging.getLogger(JOBLIB_LOGGER))


def _filter(logger: logging.Logger) -> None:
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())


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
        _filter(logging.getLogger(name))
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


PROCESS_TAG = ""  # this process's job tag (a parallel sweep's worker runs one job at a time)


def job_tag() -> str:
    """`[job 3] ` in a sweep's job: from the thread (a cohort's jobs run in threads named
    nsae-job-<num>) or else the process; empty outside a sweep."""
    name = threading.current_thread().name
    if name.startswith("nsae-job-"):
        return f"[job {name.removeprefix('nsae-job-')}] "
    return PROCESS_TAG


class Tagged:
    """A text stream that starts every line with the writing job's tag (`job_tag`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fresh: dict[int, bool] = {}  # per thread: is the next write a line's start?

    def write(self, text: str) -> int:
        tag = job_tag()
        if not tag or not text:
            return self.inner.write(text)
        thread, out = threading.get_ident(), []
        for piece in text.splitlines(keepends=True):
            if self.fresh.get(thread, True):
                out.append(tag)
            out.append(piece)
            self.fresh[thread] = piece.endswith(("\n", "\r"))
        self.inner.write("".join(out))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self.inner, name)


@contextmanager
def tag_jobs(num: int | str | None) -> Iterator[None]:
    """Within: this process's stdout and stderr (and the log handlers that write to them)
    start each line with its job's tag: `num` for the whole process (a sweep's job, where
    this process runs one job at a time), None to tag only the threads of a cohort's jobs."""
    global PROCESS_TAG
    before, PROCESS_TAG = PROCESS_TAG, "" if num is None else f"[job {num}] "
    _wrap_streams()
    try:
        yield
    finally:
        PROCESS_TAG = before


def _wrap_streams() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, Tagged):
            continue
        tagged = Tagged(stream)
        setattr(sys, name, tagged)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                handler.setStream(tagged)  # type: ignore[arg-type]
