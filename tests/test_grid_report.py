"""The experiment end to end: a real 12-condition multirun, W&B offline, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow
HEADLINE_KEYS = {
    "l0": "l0",
    "explained_variance": "explained_variance",
    "feature_suppression": "feature_suppression",
    "reconstruction_score": "reconstruction_score",
    "kl": "kl",
    "l1_l0_ratio": "l1_l0_ratio",
}


def report(sweep: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nsae.report", str(sweep), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )


def run_sweep(sweep: Path, *overrides: str) -> None:
    proc = run_cli("-m", *overrides, f"hydra.sweep.dir={sweep}", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]


def grid_overrides(base: Path) -> list[str]:
    return [
        "experiment=nsae_grid",
        "debug=tiny",
        "logger=csv_wandb",
        f"data.cache_dir={base / 'cache'}",
        "data.cache_tokens=4096",
    ]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("grid")
    run_sweep(base / "sweep", *grid_overrides(base))
    return base / "sweep"


def jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/metrics.json"))


def test_grid_runs_twelve_conditions_one_dir_each(grid: Path) -> None:
    """Ten trained cells; the two beta cells with k = 0 are their alpha cells, not trained
    again: each writes skipped.json naming its alpha job."""
    done = jobs(grid)
    assert len(done) == 10
    conditions = {
        tuple(
            json.loads((d / "metrics.json").read_text())["condition"][k]
            for k in ("sae_type", "normalization_method", "coeff")
        )
        for d in done
    }
    assert len(conditions) == 10
    skipped = sorted(grid.glob("*/skipped.json"))
    assert sorted(p.parent.name.split("_beta-alpha=")[0].split("_", 1)[1] for p in skipped) == [
        "normalized_sae_input_norm_squared",
        "relu_input_norm",
    ]
    for path in skipped:
        alpha_job = grid / json.loads(path.read_text())["same_as"]
        assert "_alpha=" in alpha_job.name and "beta" not in alpha_job.name
        assert (alpha_job / "metrics.json").is_file()


def test_one_activation_cache_for_the_whole_grid(grid: Path) -> None:
    """The LM ran over the training tokens once: one job built the cache, 11 reused it;
    likewise one job built the fixed inputs (norm sample, evaluation set), 11 read them."""
    summaries = [json.loads((d / "metrics.json").read_text()) for d in jobs(grid)]
    for name in ("activation_cache", "fixed_inputs"):
        entries = [s[name] for s in summaries]
        assert len({e["key"] for e in entries}) == 1
        assert sum(e["built_by_this_job"] for e in entries) == 1
    cache = grid.parent / "cache"
    assert len([p for p in cache.iterdir() if (p / "meta.json").is_file()]) == 1
    assert len(list((cache / "fixed").glob("*.pt"))) == 1


def test_rerun_skips_finished_jobs(grid: Path) -> None:
    before = {d: (d / "metrics.json").stat().st_mtime_ns for d in jobs(grid)}
    proc = run_cli("-m", *grid_overrides(grid.parent), f"hydra.sweep.dir={grid}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("skipping ") == 12
    assert {d: (d / "metrics.json").stat().st_mtime_ns for d in jobs(grid)} == before


def test_one_wandb_offline_run_per_job_with_tags_and_metrics(grid: Path) -> None:
    for d in jobs(grid):
        runs = list((d / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, d
        blob = runs[0].read_bytes()
        cond = json.loads((d / "metrics.json").read_text())["condition"]
        assert f"sae_type={cond['sae_type']}".encode() in blob
        assert f"coeff={cond['coeff']}".encode() in blob
        assert grid.name.encode() in blob  # the group: the sweep's name
        assert b"eval/l0/mean" in blob and b"eval/feature_density/layer_0" in blob


def test_beta_coefficients_follow_the_norm_statistics(grid: Path) -> None:
    """c_l = alpha n_l^k, k = 2 - p for the Normalized SAE (bounded features) and 1 - p for
    the standard SAE (features proportional to the input)."""
    p = {"none": 0, "input_norm": 1, "input_norm_squared": 2}
    q = {"none": 1, "normalized_sae": 0}
    for d in jobs(grid):
        summary = json.loads((d / "metrics.json").read_text())
        cond = summary["condition"]
        if cond["coeff"] != "beta":
            continue
        stats = json.loads((d / "norm_stats.json").read_text())
        alpha, k = cond["alpha"], 2 - p[cond["normalization_method"]] - q[cond["sae_type"]]
        assert cond["k"] == k
        for layer in summary["layers"]:
            n = stats["layers"][f"layer_{layer}"]["mean"]
            assert stats["coefficients"][f"layer_{layer}"] == pytest.approx(alpha * n**k, rel=1e-5)


def test_report_cells_equal_each_jobs_metrics(grid: Path) -> None:
    proc = report(grid)
    assert proc.returncode == 0, proc.stderr
    (section,) = json.loads((grid / "report.json").read_text())["sections"]
    by_source = {
        c["sources"][0]: c for c in section["cells"] if c["sources"] and c["status"] == "done"
    }
    cells = 0
    for d in jobs(grid):
        s = json.loads((d / "metrics.json").read_text())
        cell = by_source[d.name]
        for key in (*HEADLINE_KEYS, "l0_cv"):
            expected = s["cross_layer"][key] if key == "l0_cv" else s["metrics"][key]["mean"]
            got = cell["metrics"][key]
            assert got is None if expected is None else (got["mean"], got["n"]) == (expected, 1)
        assert cell["condition"]["sae_type"] == s["condition"]["sae_type"]
        cells += 1
    assert cells == 10
    assert sum(c["status"] == "= alpha (k = 0)" for c in section["cells"]) == 2
    md = (grid / "report.md").read_text()
    assert "FAILED" not in md and "unfinished" not in md
    for png in ("norm_histogram", "pareto_feature_suppression", "l0_cv", "nn_max_cos"):
        path = grid / "report_files" / f"{png}.png"
        assert path.stat().st_size > 1000, png
        assert f"report_files/{png}.png" in md
    assert "report_files/" not in (grid / "report.html").read_text()  # images embedded


def test_report_marks_failed_and_corrupt_jobs(grid: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(grid, copy, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    # two trained jobs that no k = 0 beta cell borrows from
    victims = [j for j in jobs(copy) if j.name.startswith(("0_relu_none_", "1_relu_none_"))]
    assert len(victims) == 2
    (victims[0] / "metrics.json").unlink()  # a job that died
    (victims[1] / "metrics.json").write_text("{not json")  # a corrupt one
    proc = report(copy)
    assert proc.returncode == 0
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("nsae.report: warning:")]
    assert len(warnings) == 2
    assert "did not finish" in warnings[0] + warnings[1] and "corrupt" in warnings[0] + warnings[1]
    (section,) = json.loads((copy / "report.json").read_text())["sections"]
    status = sorted(c["status"] for c in section["cells"])
    assert status.count("done") == 8 and {"corrupt", "unfinished"} <= set(status)


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    proc = report(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"nsae.report: error: no finished job in {tmp_path} (no readable metrics.json); "
        "0 job directories found"
    ]
    missing = report(tmp_path / "nope", "--wandb")
    assert missing.stderr.strip() == (
        f"nsae.report: error: sweep directory not found: {tmp_path / 'nope'}"
    )


def test_pareto_subgrid_and_matched_l0(tmp_path: Path) -> None:
    sweep = tmp_path / "pareto"
    run_sweep(
        sweep,
        "sae_type=none",
        "normalization_method=none,input_norm_squared",
        "coeff.scale=0.25,1,4",
        "debug=tiny",
        "logger=none",
        "metrics.splice=false",
        "data.cache=false",
    )
    rep = report(sweep, "--wandb")
    assert rep.returncode == 2  # offline: the W&B report is refused in one line, before writing
    assert rep.stderr.strip().splitlines() == [
        "nsae.report: error: W&B Reports need an online W&B (WANDB_MODE=offline); nothing "
        "written: unset WANDB_MODE, or drop --wandb"
    ]
    assert not (sweep / "report.md").exists() and not (sweep / "report_files").exists()
    assert report(sweep).returncode == 0
    md = (sweep / "report.md").read_text()
    for png in ("pareto_explained_variance", "pareto_feature_suppression"):  # no splice: no KL
        assert (sweep / "report_files" / f"{png}.png").stat().st_size > 1000
    assert "### Matched L0" in md and "| 0 |" in md  # per-layer rows
    table = yaml.safe_load((ROOT / "conf/coeff/alpha.yaml").read_text())["default_alpha"]
    defaults = [table["none"]["none"], table["none"]["input_norm_squared"]]
    alphas = sorted(
        json.loads(p.read_text())["condition"]["alpha"] for p in sweep.glob("*/metrics.json")
    )
    assert alphas == pytest.approx(sorted(a * k for a in defaults for k in (0.25, 1, 4)))
