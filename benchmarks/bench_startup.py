"""How fast a command answers when it does not train: `--help`, and a command refused by
its checks, each as a ratio to `python -c "import torch"` measured in the same run.

    python benchmarks/bench_startup.py [--rounds N]

Neither answer may import Lightning or load a model (target: ratio <= 1.3). The refused
commands: a misspelt option (refused by the group check) and a bad value (refused by the
checks of the composed job, `nsae.checks.validate`). Each command runs `--rounds` times,
alternating with the baseline; the median of the per-round ratios is printed.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = [sys.executable, "-c", "import torch"]
HEAVY = ("lightning", "transformers", "torch")  # which of these the command imports
COMMANDS = {
    "--help": ["--help"],
    "refused option (sae_type=bogus)": ["sae_type=bogus"],
    "refused value (optim.lr=-1)": ["optim.lr=-1"],
}


def seconds(cmd: list[str], expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    for name, argv in COMMANDS.items():
        cmd = [sys.executable, "-m", "nsae.train", *argv]
        expect = 0 if argv == ["--help"] else 2
        imported = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd[1:]], cwd=ROOT, capture_output=True, text=True
        ).stderr
        heavy = [m for m in HEAVY if re.search(rf"\|\s+{m}$", imported, re.M)]
        ratios, took, base = [], [], []
        for _ in range(args.rounds):
            base.append(seconds(BASELINE, 0))
            took.append(seconds(cmd, expect))
            ratios.append(took[-1] / base[-1])
        print(
            f"{name}: {statistics.median(took):.2f} s vs import torch "
            f"{statistics.median(base):.2f} s: ratio {statistics.median(ratios):.2f} "
            f"(rounds {min(ratios):.2f}..{max(ratios):.2f}; target <= 1.3); "
            f"imports {', '.join(heavy) or 'none of ' + ', '.join(HEAVY)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
