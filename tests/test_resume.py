"""A run killed mid-training continues from its last checkpoint with resume=true."""

from __future__ import annotations

import json
import os
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
    "trainer.max_steps=120",
    "trainer.val_check_interval=20",
    "logger=none",
    "metrics.splice=false",
    "data.cache=false",
]


def test_sigkill_then_resume_reaches_final_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsae.train", *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    step = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        if last.is_file():
            try:
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            except Exception:  # being written
                continue
            if step >= 40:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 40 <= step < 120 and not (run_dir / "metrics.json").exists()
    killed = torch.load(last, map_location="cpu", weights_only=False)
    position = killed["ActivationDataModule"]["chunks_drawn"]
    assert position >= killed["global_step"] * 256 // (8 * 128)  # data position is saved
    config_before = (run_dir / "config.yaml").read_text()

    again = run_cli(*ARGS, f"hydra.run.dir={run_dir}")  # without resume: refused, untouched
    assert again.returncode == 2
    assert "holds an interrupted run; continue it with resume=true" in again.stderr
    assert (run_dir / "config.yaml").read_text() == config_before

    other = run_cli(*ARGS, "resume=true", "coeff.alpha=9", f"hydra.run.dir={run_dir}")
    assert other.returncode == 2 and "differs in coeff.alpha" in other.stderr

    resumed = run_cli(*ARGS, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["steps"] == 120
    final = torch.load(last, map_location="cpu", weights_only=False)
    # The resumed stream went on from the saved position instead of starting over.
    assert final["ActivationDataModule"]["chunks_drawn"] >= position + (120 - step) * 256 // 1024
    assert (
        final["ActivationDataModule"]["norm_stats"] == killed["ActivationDataModule"]["norm_stats"]
    )
    assert set(summary["metrics"]) >= {"l0", "l1", "mse", "fvu"}
