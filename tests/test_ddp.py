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
    assert [p.name.split("_")[1] for p in jobs] == ["relu", "normalized"]
    assert sorted(p.parent for p in sweep.rglob("metrics.json")) == jobs
    assert sorted(p.parent for p in sweep.rglob("config.yaml") if p.parent.parent == sweep) == jobs
    for job in jobs:
        m = metrics(job)
        assert m["train_tokens"] == m["steps"] * 128 * 2  # debug=tiny batch 128 on 2 ranks
        assert (job / "ddp_rank_1.log").is_file() and not (job / "ddp_rank_2.log").exists()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1


def test_two_processes_give_the_one_process_metrics(tmp_path: Path) -> None:
    """With a negligible lr the SAEs stay at their (seeded) initialisation, so the
    evaluation, whose held-out contexts DDP splits between the ranks, must give the
    1-process values; on one layer (the edge case of every [L] shape)."""
    results, binned = {}, {}
    for name, extra in (("single", []), ("ddp", ["trainer=ddp"])):
        run_dir = tmp_path / name
        proc = run_cli(
            *BASE,
            *extra,
            "source.layers=[2]",
            "optim.lr=1e-30",  # lr must be > 0; this one changes no weight in float32
            "data.n_eval_tokens=4096",  # 32 contexts: 4 batches per rank
            "logger=none",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = metrics(run_dir)["metrics"]
        binned[name] = metrics(run_dir)["by_norm_decile"]
        assert metrics(run_dir)["layers"] == [2] and set(results[name]["l0"]) == {"layer_2", "mean"}
    single, ddp = results["single"], results["ddp"]
    for a, b in zip(binned["single"]["layer_2"], binned["ddp"]["layer_2"], strict=True):
        assert a["count"] == b["count"]
        for key in ("mean_norm", "l0", "l1", "nmse", "cosine", "feature_suppression"):
            if a[key] is not None:
                assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-6), key
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
    assert compared >= 15 * 2  # every evaluation metric, per layer and mean
