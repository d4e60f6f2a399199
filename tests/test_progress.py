"""Progress of long work: bars with a rate and an ETA on a terminal (a real pseudo-terminal
here); elsewhere (a file, a pipe) a line every `console.progress_every_s` seconds and one
at the end."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import sys
import termios
from pathlib import Path

import pytest
import torch

from nsae.data.cache import ActivationCache
from nsae.progress import progress

N_TOKENS = 300


def chunks_NLD(n: int = 3) -> list[torch.Tensor]:
    return [torch.randn(100, 2, 4, generator=torch.Generator().manual_seed(i)) for i in range(n)]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch):
    """A function that puts the slave end of a pseudo-terminal in place of stderr (call it
    in the test body: pytest's capture resets stderr after fixtures) and returns another
    that reads what was written to it so far."""
    master, slave = os.openpty()
    # a terminal 120 columns wide (a new pty is 0 x 0, where tqdm would draw nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    stream = open(slave, "w", buffering=1)  # noqa: SIM115 - closed below

    def attach():
        monkeypatch.setattr(sys, "stderr", stream)
        return written

    def written() -> str:
        stream.flush()
        out = b""
        while select.select([master], [], [], 0.5)[0]:  # the pty hands bytes over async
            out += os.read(master, 65536)
        return out.decode(errors="replace")

    yield attach
    monkeypatch.undo()
    stream.close()
    os.close(master)


def test_the_bar_shows_count_rate_and_eta_on_a_terminal(terminal) -> None:
    written = terminal()
    assert sys.stderr.isatty()
    with progress(N_TOKENS, "work", "tokens") as bar:
        for _ in range(3):
            bar.update(100)
    out = written()
    assert "work" in out and "300/300" in out
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, *[\d.]+[kMG]?tokens/s\]", out), out


def test_the_cache_build_shows_a_bar_on_a_terminal(terminal, tmp_path: Path) -> None:
    written = terminal()
    cache = ActivationCache(tmp_path, {"test": 1}, "float32")
    assert cache.ensure(lambda: iter(chunks_NLD()), N_TOKENS)
    out = written()
    assert "activation cache (float32)" in out and "300/300" in out
    assert "tokens/s" in out


def test_lines_not_bars_when_stderr_is_not_a_terminal(capsys, tmp_path: Path) -> None:
    """Off a terminal: no bar; within the interval only the line that says the work is done
    (count, time, rate), on stdout."""
    assert not sys.stderr.isatty()
    cache = ActivationCache(tmp_path, {"test": 1}, "float32")
    assert cache.ensure(lambda: iter(chunks_NLD()), N_TOKENS)
    with progress(10, "work") as bar:
        bar.update(10)
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"nsae: activation cache \(float32\): done, 300 tokens in 0:00:0\d "
                        r"\([\d.]+k?M? tokens/s\)", lines[0]), lines  # fmt: skip
    assert lines[1].startswith("nsae: work: done, 10 tokens in ")
    # the entry itself is unaffected: every row stored
    import numpy as np

    stored = np.load(cache.dir / "acts.npy")
    np.testing.assert_array_equal(stored, torch.cat(chunks_NLD()).numpy())


def test_a_line_every_interval_off_a_terminal(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `EVERY_S` seconds (a fake clock here) one line: count/total, percent, rate,
    elapsed time and ETA, all computed from the clock."""
    from nsae import progress as module

    now = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(module, "EVERY_S", 10.0)
    with progress(400, "work", "steps") as bar:
        for _ in range(4):
            now[0] += 5.0  # 20 steps per 5 s: 4 steps/s
            bar.update(20)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "nsae: work: 40/400 steps (10%)  4 steps/s  elapsed 0:00:10  ETA 0:01:30",
        "nsae: work: 80/400 steps (20%)  4 steps/s  elapsed 0:00:20  ETA 0:01:20",
        "nsae: work: done, 80 steps in 0:00:20 (4 steps/s)",
    ]


def test_no_bar_on_ranks_other_than_zero(terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    written = terminal()
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with progress(N_TOKENS, "work") as bar:
        bar.update(N_TOKENS)
    assert written() == ""


def test_lightning_bars_are_labelled_and_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The training run's progress: lines when stdout is not a terminal; on one, Lightning's
    bar, whose validation and final-evaluation (splice) bars carry nsae's labels."""
    from nsae.progress import ProgressLines, progress_callback

    assert not sys.stdout.isatty() and isinstance(progress_callback(256), ProgressLines)
    master, slave = os.openpty()
    with open(slave, "w") as stream:
        monkeypatch.setattr(sys, "stdout", stream)
        bar = progress_callback(256)
        monkeypatch.undo()
    os.close(master)
    assert bar is not None
    assert (bar.validation_description, bar.test_description) == (
        "validate (batches)",
        "evaluate (batches)",
    )
