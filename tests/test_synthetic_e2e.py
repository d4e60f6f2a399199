"""`python -m nsae.train source=synthetic`: a run on synthetic layers reports the
ground-truth metrics and saves the truth with it (active once the datamodule has the
synthetic branch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sae_lens")

pytestmark = pytest.mark.slow


def test_a_synthetic_run_reports_ground_truth_and_saves_the_models(cli, tmp_path: Path) -> None:
    from sae_lens.synthetic import SyntheticModel

    run_dir = tmp_path / "run"
    proc = cli("source=synthetic", "debug=tiny", "logger=csv", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "metrics.json").read_text())
    layers = [f"layer_{i}" for i in range(4)]
    for name in ("mcc", "uniqueness", "precision", "recall", "f1", "shrinkage"):
        assert all(0 <= summary["metrics"][name][k] <= 2 for k in layers), name
    for k in layers:
        model = SyntheticModel.load_from_disk(run_dir / "synthetic" / k)
        expected_l0 = model.activation_generator.firing_probabilities.sum().item()
        assert summary["metrics"]["true_l0"][k] == pytest.approx(expected_l0, rel=0.1)
        l0, true_l0 = summary["metrics"]["l0"][k], summary["metrics"]["true_l0"][k]
        assert summary["metrics"]["excess_l0"][k] == pytest.approx(l0 - true_l0, abs=1e-6)
        deciles = summary["ground_truth_by_norm_decile"][k]
        assert len(deciles) == 10 and sum(r["count"] for r in deciles) == summary["eval_tokens"]
    premise = json.loads((run_dir / "synthetic" / "premise.json").read_text())
    assert premise["layer_scale"] == {k: 2.0**i for i, k in enumerate(layers)}
