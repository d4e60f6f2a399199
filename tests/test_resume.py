"""A run killed mid-training continues from its last checkpoint with resume=true."""

from __future__ import annotations

import csv
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
    "sae_type=normalized_sae",  # training noise: the random state must resume too
    "trainer.max_steps=120",
    "trainer.val_check_interval=20",
    "metrics.splice=false",
]


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def kill_after_checkpoint(run_dir: Path, args: list[str], min_step: int) -> int:
    """Start a run, SIGKILL it once a checkpoint at >= min_step exists; return its step."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsae.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline, step = time.time() + 300, 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if last.is_file():
            try:
                step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
            except Exception:  # being written
                continue
            if step >= min_step:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return step


@pytest.mark.parametrize("cache", ["true", "false"])
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, cache: str) -> None:
    args = [*ARGS, f"data.cache={cache}", f"data.cache_dir={tmp_path / 'cache'}"]
    whole = run_cli(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    run_dir = tmp_path / "run"
    step = kill_after_checkpoint(run_dir, args, min_step=40)
    assert 40 <= step < 120 and not (run_dir / "metrics.json").exists()
    logged_before = [r for r in csv_rows(run_dir) if int(r["step"]) < step]
    assert logged_before, "nothing was logged before the kill"
    config_before = (run_dir / "config.yaml").read_text()

    again = run_cli(*args, f"hydra.run.dir={run_dir}")  # without resume: refused, untouched
    assert again.returncode == 2
    assert "holds an interrupted run; continue it with resume=true" in again.stderr
    assert (run_dir / "config.yaml").read_text() == config_before
    other = run_cli(*args, "resume=true", "coeff.alpha=9", f"hydra.run.dir={run_dir}")
    assert other.returncode == 2 and "differs in coeff.alpha" in other.stderr

    resumed = run_cli(*args, "resume=true", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((run_dir / "metrics.json").read_text())
    want = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert got["steps"] == want["steps"] == 120
    for name, row in want["metrics"].items():
        for key, value in row.items():
            assert got["metrics"][name][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (
                f"{name}/{key}"
            )
    rows = csv_rows(run_dir)
    kept = [r for r in rows if int(r["step"]) < step]
    assert [r["step"] for r in kept] == [r["step"] for r in logged_before]
    assert [r.get("train/loss") for r in kept] == [r.get("train/loss") for r in logged_before]
    steps_logged = sorted({int(r["step"]) for r in rows})
    assert steps_logged == sorted({int(r["step"]) for r in csv_rows(tmp_path / "whole")})
