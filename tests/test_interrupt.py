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

from tests.conftest import ROOT, ctrl_c, run_cli

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


def _sha1s(paths: list[Path]) -> dict[Path, str]:
    import hashlib

    return {
        p: hashlib.sha1(p.read_bytes()).hexdigest()
        for d in paths
        for p in d.rglob("*")
        if p.is_file()
    }


def test_ctrl_c_in_a_parallel_sweep_saves_running_jobs_and_a_rerun_continues(
    tmp_path: Path,
) -> None:
    """hydra/launcher=parallel: Ctrl-C (SIGINT to the process group, as a terminal sends it)
    stops the running jobs at their step, starts no queued one, and exits 130; the same
    command again skips the finished jobs untouched and resumes the interrupted ones."""
    sweep = tmp_path / "sweep"
    args = [
        "-m", "experiment=nsae_study", "debug=study", "normalization_method=none",
        "coeff=alpha", "seed=0", "sae_type=none", "budget.steps=1500",
        "logger=csv", f"hydra.sweep.dir={sweep}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip

    def training_now() -> list[Path]:  # fit started (norm_stats.json), not yet finished
        return [
            p.parent
            for p in sweep.glob("*/norm_stats.json")
            if not (p.parent / "metrics.json").exists()
        ]

    # norm_stats.json is written at fit start: 4 s more lets the first steps run
    code, out, err = ctrl_c(
        args, lambda: bool(list(sweep.glob("*/metrics.json")) and training_now()), 4.0
    )
    # (listed once the sweep has exited: a job may end its last steps after the signal)
    finished = [p.parent for p in sweep.glob("*/metrics.json")]
    before = _sha1s(finished)
    assert code == 130, err[-3000:]
    assert "re-run the same command to continue" in err
    assert re.search(r"nsae: sweep: \d+ finished, 0 skipped, 0 failed, \d+ unfinished", out)
    saved = [d for d in sweep.iterdir() if (d / "checkpoints" / "last.ckpt").is_file()]
    stopped = [d for d in saved if not (d / "metrics.json").exists()]
    assert stopped, "no running job saved its step"
    # 6 jobs: 5 scales at 1500 steps, and scale 1 at 3000 (the preset's doubling check)
    assert len(list(sweep.glob("*/metrics.json"))) < 6  # the queued jobs did not run

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    # the jobs finished before the interrupt are skipped; the others (resumed or never
    # started) finish now
    assert f"{6 - len(finished)} finished, {len(finished)} skipped, 0 failed" in again.stdout
    assert _sha1s(finished) == before  # finished jobs were skipped, not rewritten
    for d in stopped:
        summary = json.loads((d / "metrics.json").read_text())
        assert summary["steps"] == int(d.name.rsplit("steps=", 1)[1])  # 1500 or 3000


def test_ctrl_c_while_the_last_jobs_run_still_exits_as_interrupted(tmp_path: Path) -> None:
    """A parallel sweep of two jobs, both running (none queued to notice the stop): Ctrl-C
    saves both steps, exits 130 and says to re-run, not 0 as if the sweep had ended; the
    re-run finishes both from their checkpoints."""
    sweep = tmp_path / "sweep"
    args = [
        "-m", "experiment=nsae_study", "debug=study", "normalization_method=none",
        "coeff=alpha", "coeff.scale=0.5,2", "seed=0", "sae_type=none",
        "budget.steps=2000", "logger=csv",
        f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    # both jobs have started fitting, so none is queued to notice the stop
    code, out, err = ctrl_c(args, lambda: len(list(sweep.glob("*/norm_stats.json"))) == 2, 3.0)
    assert code == 130, err[-3000:]
    assert "re-run the same command to continue" in err
    assert "nsae: sweep: 0 finished, 0 skipped, 0 failed, 2 unfinished" in out
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished, 0 skipped, 0 failed" in again.stdout
    for summary in sweep.glob("*/metrics.json"):
        assert json.loads(summary.read_text())["steps"] == 2000
