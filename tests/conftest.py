from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# One instruction set for the CPU kernels on every x86 machine, set before torch is imported
# (and inherited by every subprocess a test starts). The exactness tests (resume, banking)
# compare two code paths to 1e-6, and the README's default results are digits: on a CPU with
# AVX-512 (and AMX), torch, MKL and oneDNN pick other kernels than on an AVX2 one, which
# round float32 differently (seen: L0 38.377 resumed against 38.366 uninterrupted). AVX2 is
# what the published numbers were computed with; a user's runs are not pinned.
if platform.machine().lower() in ("x86_64", "amd64"):
    for var, isa in (
        ("ATEN_CPU_CAPABILITY", "avx2"),
        ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ):
        os.environ.setdefault(var, isa)

ROOT = Path(__file__).resolve().parents[1]


# a run of a few seconds: two steps, streamed from the LM (no activation cache)
CHEAP = [
    "debug=tiny",
    "logger=none",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "metrics.splice=false",
    "data.cache=false",
]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m nsae.train ARGS` as a user would; return the finished process."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nsae.train", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctrl_c(args: list[str], ready: Callable[[], bool], settle: float) -> tuple[int, str, str]:
    """Start `python -m nsae.train ARGS` in its own process group, wait until ready() (at
    most 10 minutes; the command must still run then), let it run `settle` seconds more,
    send SIGINT to the group as a terminal's Ctrl-C does; return (exit code, stdout, stderr)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "nsae.train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.5)
    assert proc.poll() is None, "the command ended before it could be interrupted"
    time.sleep(settle)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def import_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    import importlib

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture
def cli():
    """`cli(*args)` runs `python -m nsae.train ARGS` in a subprocess."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random GPT-2 with the embedded tokenizer, saved in HF format."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from nsae.config import asset

    path = tmp_path_factory.mktemp("tiny-gpt2")
    tok = AutoTokenizer.from_pretrained(asset("kjv-gpt2"))
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
