"""SIGTERM (Slurm preemption, `kill`) mid-training: a checkpoint at the step it was on, one
line saying how to resume, and `resume=true` finishes the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow
ARGS = [
    "debug=fast",
    "source.layers=[1]",
    "trainer.max_steps=400",
    "trainer.val_check_interval=20",
    "metrics.splice=false",
    "logger=none",
]


def test_sigterm_saves_the_current_step_and_resume_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, f"data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsae.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.is_file():
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("nsae:")]
    assert len(lines) == 1 and "Traceback" not in err
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", lines[0]).group(1))
    assert "resume=true" in lines[0]
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == step and 20 <= step < 400
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "failed.json").exists()

    resumed = run_cli(*args, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 400


def test_a_plain_run_prints_nsae_lines_not_dependency_noise(tmp_path: Path) -> None:
    proc = run_cli(
        "debug=tiny",
        "source.layers=[0]",
        "metrics.splice=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    noises = ("Tip:", "litlogger", "Epoch 0/-2", "LeafSpec", "Loading weights", "TPU available")
    for noise in noises:
        assert noise not in out, noise
    assert out.count("GPU available") == 1  # each Lightning line once, not twice
    assert f"run dir: {tmp_path / 'run'}" in proc.stdout
