"""Progress bars for long work: shown with a rate and an ETA on a terminal (a real
pseudo-terminal here), and nothing at all when stderr is not a terminal."""

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

from nsae.console import progress
from nsae.data.cache import ActivationCache

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


def test_no_bar_when_stderr_is_not_a_terminal(capsys, tmp_path: Path) -> None:
    assert not sys.stderr.isatty()
    cache = ActivationCache(tmp_path, {"test": 1}, "float32")
    assert cache.ensure(lambda: iter(chunks_NLD()), N_TOKENS)
    with progress(10, "work") as bar:
        bar.update(10)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    # the entry itself is unaffected: every row stored
    import numpy as np

    stored = np.load(cache.dir / "acts.npy")
    np.testing.assert_array_equal(stored, torch.cat(chunks_NLD()).numpy())


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
    """The training run's bar (Lightning's): None when stdout is not a terminal; on one,
    the validation and final-evaluation (splice) bars carry nsae's labels."""
    from nsae.console import progress_bar

    assert not sys.stdout.isatty() and progress_bar() is None
    master, slave = os.openpty()
    with open(slave, "w") as stream:
        monkeypatch.setattr(sys, "stdout", stream)
        bar = progress_bar()
        monkeypatch.undo()
    os.close(master)
    assert bar is not None
    assert (bar.validation_description, bar.test_description) == (
        "validate (batches)",
        "evaluate (batches)",
    )
