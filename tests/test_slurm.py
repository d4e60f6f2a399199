"""A grid through `hydra/launcher=slurm` on a real one-node Slurm cluster on this machine
(scripts/slurm_local.sh), each job a 2-task Slurm step that trains with DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

SLURM_PROGRAMS = ("slurmctld", "slurmd", "munged", "sinfo", "srun")
MISSING = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local Slurm cluster runs as root"),
    # The suite never installs system packages (scripts/slurm_local.sh would): .ci/run
    # provides Slurm where it can, and elsewhere these tests say what is missing.
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"Slurm is not installed (missing: {', '.join(MISSING)}); .ci/run installs "
        "Debian's slurm-wlm and munge as root, or install them yourself",
    ),
]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs .[slurm]")
    was_running = shutil.which("sinfo") is not None and (
        subprocess.run(["sinfo"], capture_output=True).returncode == 0
    )
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, timeout=600)
    yield
    if not was_running:
        subprocess.run(["bash", str(SCRIPT), "stop"], check=True, timeout=120)


def slurm_grid(sweep: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=15",
        "trainer=ddp",
        "debug=tiny",
        "logger=none",
        "metrics.splice=false",
        "data.cache_tokens=4096",
        f"data.cache_dir={sweep.parent / 'cache'}",
        f"hydra.sweep.dir={sweep}",
        *extra,
        timeout=1200,
    )


def test_two_condition_grid_trains_with_ddp_on_slurm(slurm, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = slurm_grid(sweep, "sae_type=none,normalized_sae")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        assert m["train_tokens"] == m["steps"] * 128 * 2  # two ranks of batch 128
        # The ranks were Slurm tasks, not processes started by nsae.
        assert not (job / "ddp_rank_1.log").exists()
    # One Slurm array, one task per job, two Slurm tasks (ranks) in each.
    task_logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    array_tasks = {p.name.rsplit("_", 2)[0] for p in task_logs}
    assert len(array_tasks) == 2 and len(task_logs) == 4, [p.name for p in task_logs]
    assert len({t.split("_")[0] for t in array_tasks}) == 1  # the same array job id


def test_devices_that_do_not_match_the_allocation_fail_in_one_line(slurm, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = slurm_grid(sweep, "hydra.launcher.tasks_per_node=1", "sae_type=none")
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    line = "trainer.devices=2 x trainer.num_nodes=1 does not match the Slurm allocation of"
    assert line in logs, logs[-2000:]
    assert not list(sweep.rglob("metrics.json"))
