"""A 6-job streaming sweep under hydra/launcher=nsae_bank against the same sweep run job
after job, in one run.

    python benchmarks/bench_bank.py [--source gpt2_small_shape|embedded|both] [--steps N]

The sweep: sae_type=none,normalized_sae x normalization_method=none,input_norm,
input_norm_squared (coeff=alpha), data.cache=false (every training batch is harvested by
the LM on the fly), validation half-way, final evaluation with splicing, export, as
`python -m nsae.train -m ...` from the command line. Two sources:
- gpt2_small_shape (default): GPT-2 small's architecture with random weights
  (`source=gpt2_small_shape`, nothing downloaded), one SAE on its last layer (`--layer`,
  default 11: the harvest runs all 12 blocks), 256-token batches, 100 steps: a sweep
  whose LM forward costs what a real model's does, the case streaming exists for (a large
  model's activations do not fit on disk). Per token, GPT-2 small's forward is ~170 MFLOP
  and the SAE step at expansion 8 ~57 MFLOP.
- embedded: the embedded model (4 layers, d 128) at the grid's 500 steps. Its LM is cheap
  next to the SAE steps, so a bank saves less here (see BENCHMARKS.md).
(a) sequential: Hydra's basic launcher, one job after another, each harvesting its own
    stream; (b) bank: hydra/launcher=nsae_bank, one process, one harvest for the six jobs.
Each starts from an empty cache directory (so each builds its fixed inputs once).
ratio = (b) / (a), target <= 0.6. It also checks that the two sweeps' metrics agree
(largest relative difference over every number in metrics.json but timings and the
`built_by_this_job` flags).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import schedule, timed_sweep

SWEEP = [
    "sae_type=none,normalized_sae",
    "normalization_method=none,input_norm,input_norm_squared",
    "coeff=alpha",
    "data.cache=false",
    "logger=csv",
]
UNTIMED = ("eval_seconds", "built_by_this_job")


def numbers(obj: object, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        return {k: v for key, o in obj.items() for k, v in numbers(o, f"{prefix}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, o in enumerate(obj) for k, v in numbers(o, f"{prefix}[{i}]").items()}
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {prefix: float(obj)}
    return {}


def max_rel_diff(a_dir: Path, b_dir: Path) -> tuple[float, int]:
    worst, n = 0.0, 0
    for a_file in sorted(a_dir.glob("*/metrics.json")):
        a = numbers(json.loads(a_file.read_text()))
        b = numbers(json.loads((b_dir / a_file.parent.name / "metrics.json").read_text()))
        for key, x in a.items():
            if any(u in key for u in UNTIMED):
                continue
            y = b[key]
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-12))
        n += 1
    return worst, n


SOURCES = {
    "gpt2_small_shape": (
        [
            "source=gpt2_small_shape",
            "data.batch_size=256",
            "data.buffer_tokens=4096",
            "data.harvest_batch=8",
            "data.n_eval_tokens=1024",
            "data.n_norm_tokens=1024",
        ],
        100,
    ),
    "embedded": ([], 500),
}


def bench(source: str, n_steps: int | None, layer: int) -> None:
    overrides, default_steps = SOURCES[source]
    if source == "gpt2_small_shape":
        overrides = [*overrides, f"source.layers=[{layer}]"]
    n = n_steps or default_steps
    args = [*SWEEP, *overrides, *schedule(n)]
    with tempfile.TemporaryDirectory() as tmp:
        sequential_s = timed_sweep(tmp, "sequential", *args)
        bank_s = timed_sweep(tmp, "bank", *args, "hydra/launcher=nsae_bank")
        worst, n_jobs = max_rel_diff(Path(tmp, "sequential"), Path(tmp, "bank"))
    where = f", layer {layer}" if source == "gpt2_small_shape" else ""
    print(f"{source}{where}: 6-job streaming sweep x {n} steps (data.cache=false)")
    print(f"  sequential (basic launcher): {sequential_s:.1f} s")
    print(f"  hydra/launcher=nsae_bank:    {bank_s:.1f} s")
    print(f"  metrics of the {n_jobs} jobs agree within {worst:.2e} (relative)")
    print(f"  bank/sequential ratio {bank_s / sequential_s:.3f} (target <= 0.6)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=[*SOURCES, "both"], default="gpt2_small_shape")
    p.add_argument("--steps", type=int, default=None, help="default: 100 (gpt2), 500 (embedded)")
    p.add_argument("--layer", type=int, default=11, help="gpt2_small_shape's SAE layer")
    args = p.parse_args()
    for source in SOURCES if args.source == "both" else [args.source]:
        bench(source, args.steps, args.layer)


if __name__ == "__main__":
    main()
