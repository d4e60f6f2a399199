"""DDP on CPU (gloo, 2 processes): a single run and a multirun, each job with its own ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
BASE = ["debug=tiny", "metrics.splice=true", "data.cache_tokens=4096"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_multirun_gives_each_job_one_dir_ranks_and_wandb_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "trainer=ddp",
        "sae_type=none,normalized_sae",
        *BASE,
        "logger=csv_wandb",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # Children that re-ran the sweep would have added job directories or nested sweeps.
    assert [p.name.split("_")[1] for p in jobs] == ["none", "normalized"]
    assert sorted(p.parent for p in sweep.rglob("metrics.json")) == jobs
    assert sorted(p.parent for p in sweep.rglob("config.yaml") if p.parent.parent == sweep) == jobs
    for job in jobs:
        m = metrics(job)
        assert m["train_tokens"] == m["steps"] * 128 * 2  # debug=tiny batch 128 on 2 ranks
        assert (job / "ddp_rank_1.log").is_file() and not (job / "ddp_rank_2.log").exists()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1


def test_two_processes_give_the_one_process_metrics(tmp_path: Path) -> None:
    """With lr=0 the SAEs stay at their (seeded) initialisation, so the evaluation, whose
    held-out contexts DDP splits between the ranks, must give the 1-process values."""
    results = {}
    for name, extra in (("single", []), ("ddp", ["trainer=ddp"])):
        run_dir = tmp_path / name
        proc = run_cli(
            *BASE,
            *extra,
            "optim.lr=0",
            "data.n_eval_tokens=4096",  # 32 contexts: 4 batches per rank
            "logger=none",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = metrics(run_dir)["metrics"]
    single, ddp = results["single"], results["ddp"]
    compared = 0
    for name, row in single.items():
        if name == "dead_fraction":  # depends on which training tokens each rank saw
            continue
        for key, value in row.items():
            if value is None:
                assert ddp[name][key] is None
                continue
            assert math.isclose(ddp[name][key], value, rel_tol=1e-4, abs_tol=1e-6), (name, key)
            compared += 1
    assert compared >= 15 * 5  # every evaluation metric, per layer and mean
