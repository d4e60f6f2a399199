"""The 12-condition grid's wall time against the work it cannot avoid, in one run.

    python benchmarks/bench_sweep.py [--steps 500]

(a) The grid as a user runs it: `python -m nsae.train -m experiment=nsae_grid` (500 steps
    per job) with a fresh activation cache (one process, Hydra's basic launcher, CSV
    logging, validation half-way, final evaluation with splicing, export).
(b) The baseline: one harvest (the LM work a sweep needs once: set-up time with an empty
    cache directory, which builds the activation cache and the fixed inputs, minus set-up
    time with a warm one) plus, for every job, its training loop (first step to the end of
    fit, the validation half-way included) and its final evaluation, measured for a job
    of each SAE type run in this process and counted once per trained grid job of that type
    (the normalisation method and the coefficient do not change the work; beta jobs with
    k = 0 are skipped by the grid, not trained).
ratio = (a) / (b), target <= 1.1: what running the jobs as a sweep costs beyond one harvest
and the jobs' own training and evaluation. Also printed: the share of a job alone (in this
process, warm cache) spent outside its training loop (target <= 25%).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
from common import config, schedule, timed_run, timed_sweep

from nsae.data.datamodule import ActivationDataModule
from nsae.evaluation import zero_ablation

GRID = ["experiment=nsae_grid", "logger=csv"]


class EvalTimer(L.Callback):
    """Wall time of the final evaluation (`trainer.test`)."""

    def on_test_start(self, *args) -> None:
        self.t0 = time.perf_counter()

    def on_test_end(self, *args) -> None:
        self.seconds = time.perf_counter() - self.t0


def setup_seconds(cfg) -> float:
    dm = ActivationDataModule(
        cfg.data, cfg.source, list(range(4)), cfg.seed, fixed_extras=zero_ablation
    )
    start = time.perf_counter()
    dm.setup("fit")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    steps = schedule(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        grid_s = timed_sweep(tmp, "grid", *GRID, *steps)
        n_jobs = {sae: 0 for sae in ("none", "normalized_sae")}
        grid_job_s: dict[str, list[float]] = {sae: [] for sae in n_jobs}
        for path in Path(tmp, "grid").glob("*/metrics.json"):  # k = 0 beta jobs: skipped
            sae = json.loads(path.read_text())["condition"]["sae_type"]
            n_jobs[sae] += 1  # a job's span: its config.yaml (written first) to metrics.json
            span = path.stat().st_mtime - (path.parent / "config.yaml").stat().st_mtime
            grid_job_s[sae].append(span)

        base = [
            *GRID[1:],
            *steps,
            f"data.cache_dir={tmp}/base_cache",
            f"logger.csv.save_dir={tmp}/base_logs",  # no Hydra run dir outside the CLI
        ]
        cold = setup_seconds(config(*base))
        warm = setup_seconds(config(*base))
        harvest_s = cold - warm
        job_s, train_s, eval_s = {}, {}, {}
        for sae in ("none", "normalized_sae"):
            evaluation = EvalTimer()
            start = time.perf_counter()
            train_s[sae] = timed_run(config(*base, f"sae_type={sae}"), watch=[evaluation]).seconds
            job_s[sae] = time.perf_counter() - start
            eval_s[sae] = evaluation.seconds
    work = {sae: train_s[sae] + eval_s[sae] for sae in train_s}
    baseline_s = harvest_s + sum(n_jobs[sae] * work[sae] for sae in work)
    print(f"grid of {sum(n_jobs.values())} trained jobs x {args.steps} steps: {grid_s:.1f} s wall")
    print(
        f"baseline: harvest {harvest_s:.1f} s + {n_jobs['none']} x (none: train "
        f"{train_s['none']:.1f} s + eval {eval_s['none']:.1f} s) + {n_jobs['normalized_sae']} x "
        f"(normalized_sae: train {train_s['normalized_sae']:.1f} s + eval "
        f"{eval_s['normalized_sae']:.1f} s) = {baseline_s:.1f} s"
    )
    for sae, spans in grid_job_s.items():
        print(f"  {sae} in the grid: {', '.join(f'{x:.0f}' for x in sorted(spans))} s per job")
    for sae in job_s:
        outside = 1 - train_s[sae] / job_s[sae]
        print(
            f"  {sae} alone: {job_s[sae]:.1f} s, of which {outside:.0%} outside the training "
            "loop (target <= 25%)"
        )
    print(f"grid/baseline ratio {grid_s / baseline_s:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
