"""The 12-condition grid's wall time against its jobs run alone, in one run.

    python benchmarks/bench_sweep.py [--steps 100]

(a) The grid as a user runs it: `python -m nsae.train -m experiment=nsae_grid` with
    `--steps` steps per job and a fresh activation cache (one process, Hydra's basic
    launcher, CSV logging, final evaluation with splicing, export).
(b) The baseline: one harvest (the LM pass over the training tokens that the grid's cache
    needs once: set-up time with an empty cache minus set-up time with a warm one) plus
    12 x one job alone with no harvest (a whole job from the warm cache, in this process:
    training, evaluation, export; measured for each SAE type and counted 6 times each, as
    the normalisation method and coefficient do not change the work).
ratio = (a) / (b), target <= 1.1: what running the jobs as a sweep costs beyond the jobs
themselves and one harvest. The training loop's share of a job is printed too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import config, timed_run

from nsae.data.datamodule import ActivationDataModule

GRID = ["experiment=nsae_grid", "logger=csv"]


def setup_seconds(cfg) -> float:
    dm = ActivationDataModule(cfg.data, cfg.source, list(range(4)), cfg.seed)
    start = time.perf_counter()
    dm.setup("fit")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    steps = [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nsae.train",
                "-m",
                *GRID,
                *steps,
                f"data.cache_dir={tmp}/grid_cache",
                f"hydra.sweep.dir={tmp}/grid",
            ],
            check=True,
            capture_output=True,
        )
        grid_s = time.perf_counter() - start
        n_jobs = len(list(Path(tmp, "grid").glob("*/metrics.json")))

        base = [
            *GRID[1:],
            *steps,
            f"data.cache_dir={tmp}/base_cache",
            f"logger.csv.save_dir={tmp}/base_logs",  # no Hydra run dir outside the CLI
        ]
        cold = setup_seconds(config(*base))
        warm = setup_seconds(config(*base))
        harvest_s = cold - warm
        job_s, train_s = {}, {}
        for sae in ("none", "normalized_sae"):
            start = time.perf_counter()
            train_s[sae] = timed_run(config(*base, f"sae_type={sae}")).seconds
            job_s[sae] = time.perf_counter() - start
    baseline_s = harvest_s + 6 * sum(job_s.values())
    print(f"grid of {n_jobs} jobs x {args.steps} steps: {grid_s:.1f} s wall")
    print(
        f"baseline: harvest {harvest_s:.1f} s + 6 x (job none {job_s['none']:.1f} s "
        f"+ job normalized_sae {job_s['normalized_sae']:.1f} s) = {baseline_s:.1f} s"
    )
    share = sum(train_s.values()) / sum(job_s.values())
    print(f"  the training loop is {share:.0%} of a job alone (the rest: set-up, evaluation)")
    print(f"grid/baseline ratio {grid_s / baseline_s:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
