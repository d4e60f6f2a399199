"""Learning-rate and sparsity-coefficient schedules (nsae/schedule.py), and what is logged."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from nsae.errors import NsaeError
from nsae.schedule import coeff_factor, lr_factor


def test_warmup_then_linear_and_cosine_decay_by_hand() -> None:
    # warm-up over 4 steps: 1/4, 2/4, 3/4, 4/4
    assert [lr_factor(t, 20, 4) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    # linear from 1 at t = 4 to r = 0.1 at t = 20: u = (t - 4) / 16
    assert lr_factor(12, 20, 4, "linear", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(20, 20, 4, "linear", 0.1) == pytest.approx(0.1)
    assert lr_factor(12, 20, 4, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(8, 20, 4, "cosine", 0.0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(NsaeError, match="valid: none, linear, cosine"):
        lr_factor(0, 10, 0, "exp")


def test_coefficient_warmup() -> None:
    assert [coeff_factor(t, 4) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert coeff_factor(0, 0) == 1.0


@pytest.mark.slow
def test_logged_lr_and_coefficient_follow_the_schedule(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = cli(
        "debug=tiny",
        "source.layers=[0]",
        "trainer.max_steps=24",
        "trainer.log_every_n_steps=2",
        "optim.warmup_steps=6",
        "optim.decay=cosine",
        "optim.min_lr_ratio=0.1",
        "coeff.warmup_steps=10",
        "metrics.splice=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/lr")]
    assert len(rows) >= 10
    alpha = 2.0  # the standard SAE's default alpha with normalization_method=none
    for row in rows:
        step = int(row["step"])
        assert float(row["train/lr"]) == pytest.approx(3e-3 * lr_factor(step, 24, 6, "cosine", 0.1))
        assert float(row["train/coeff/layer_0"]) == pytest.approx(alpha * coeff_factor(step, 10))
