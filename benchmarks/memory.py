"""Memory over a long default run: process RSS at step 100 and at step 2000 must agree
within 10% (no state grows with the number of steps), and peak memory per training token.

    python benchmarks/memory.py [--steps 2000] [overrides ...]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import lightning as L
from common import config, timed_run


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RSSProbe(L.Callback):
    def __init__(self, at: tuple[int, ...]) -> None:
        self.at, self.rss = at, {}

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step in self.at:
            self.rss[trainer.global_step] = rss_mib()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    probe = RSSProbe((100, args.steps))
    overrides = [
        f"trainer.max_steps={args.steps}",
        "logger=none",
        "metrics.splice=false",
        "data.cache_dir=" + tempfile.mkdtemp(),
        *args.overrides,
    ]
    cfg = config(*overrides)
    timed_run(cfg, watch=[probe])
    a, b = probe.rss[100], probe.rss[args.steps]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = args.steps * cfg.data.batch_size
    print(f"RSS at step 100: {a:.1f} MiB; at step {args.steps}: {b:.1f} MiB")
    print(f"rss step{args.steps}/step100 ratio {b / a:.3f} (target within 0.90..1.10)")
    print(
        f"peak RSS {peak:.0f} MiB over {tokens:,} training tokens: "
        f"{peak * 2**20 / tokens:,.0f} bytes per training token"
    )


if __name__ == "__main__":
    main()
