"""The synthetic study: the ground-truth section's statistics and verdicts on built numbers
(fast), and the preset end to end, shrunk by `debug=study` (slow): a real sweep on the
synthetic source whose report renders the ground-truth claims."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from nsae.report import verdicts as v
from nsae.report.groups import sections
from nsae.report.runs import Run, flatten
from nsae.report.sections import Ctx
from nsae.report.sections import ground_truth as gt
from nsae.report.stats import Stat
from tests.test_grid_report import report, run_sweep
from tests.test_report_fixture import config

NORMS = [math.exp(0.5 * k) for k in range(10)]  # decile mean norms: log n_k = 0.5 k
SCALES = (0.5, 1.0, 2.0)


def built_run(
    sae: str, scale: float, seed: int, slope: float, mcc: float, source: str = "synthetic"
) -> Run:
    """A finished synthetic run on layers 0, 1: L0 = 10 x scale, excess L0 per decile
    = 5 + slope * log n_k (so its least-squares slope is `slope`), MCC and F1 = `mcc`."""
    layers = {f"layer_{i}": None for i in (0, 1)}
    per_layer = lambda x: {k: x for k in layers} | {"mean": x}  # noqa: E731
    deciles = [{"bin": k, "count": 10, "mean_norm": n} for k, n in enumerate(NORMS)]
    excess = [
        {"bin": k, "count": 10, "excess_l0": 5 + slope * math.log(n)} for k, n in enumerate(NORMS)
    ]
    summary = {
        "layers": [0, 1],
        "condition": {"alpha": scale},
        "metrics": {
            "l0": per_layer(10.0 * scale),
            "mcc": per_layer(mcc),
            "f1": per_layer(mcc),
            "mcc_random": per_layer(0.3),
        },
        "by_norm_decile": {k: deciles for k in layers},
        "ground_truth_by_norm_decile": {k: excess for k in layers},
    }
    cfg = flatten(config(sae, scale=scale, seed=seed, **{"source.name": source}))
    return Run(Path("."), f"{sae}_{scale}_{seed}", cfg, "done", summary=summary)


def section(std_slopes: list[float], nsae_slopes: list[float], nsae_mcc: list[float]):
    """One section: the standard SAE (MCC 0.7 + 0.01 seed) and the Normalized SAE, both
    with the plain loss and alpha, 3 scales x 3 seeds (slopes and MCC per seed)."""
    runs = [
        built_run(sae, scale, seed, slopes[seed], mccs[seed])
        for sae, slopes, mccs in (
            ("none", std_slopes, [0.7, 0.71, 0.72]),
            ("normalized_sae", nsae_slopes, nsae_mcc),
        )
        for scale in SCALES
        for seed in range(3)
    ]
    (sec,) = sections(runs)
    return sec


def test_slope_is_the_least_squares_slope_and_skips_empty_deciles() -> None:
    assert gt.slope([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx(2.0)
    assert gt.slope([0.0, 1.0, 2.0], [0.0, 3.0, 0.0]) == pytest.approx(0.0)
    assert gt.slope([1.0, 1.0], [0.0, 3.0]) is None
    run = built_run("none", 1.0, 0, 1.5, 0.7)
    run.summary["ground_truth_by_norm_decile"]["layer_1"][9] |= {"count": 0, "excess_l0": None}
    slopes = gt.run_slopes(run)
    assert slopes["layer_0"] == pytest.approx(1.5) and slopes["layer_1"] == pytest.approx(1.5)
    assert slopes["mean"] == pytest.approx(1.5)


def test_rise_removed_rule() -> None:
    up, flat = Stat(2.0, 0.5, 3), Stat(0.1, 0.3, 3)
    assert gt.rise_removed(up, flat) == v.SUPPORTED  # normalized CI includes 0
    assert gt.rise_removed(up, Stat(-0.5, 0.2, 3)) == v.SUPPORTED  # normalized falls
    assert gt.rise_removed(up, Stat(1.0, 0.2, 3)) == v.CONTRADICTED  # less, but still rises
    assert gt.rise_removed(Stat(-1.0, 0.5, 3), flat) == v.CONTRADICTED  # standard falls
    assert gt.rise_removed(flat, flat) == v.INCONCLUSIVE  # no rise to remove
    assert gt.rise_removed(up, Stat(0.1, None, 1)) == v.INCONCLUSIVE  # one seed


def test_at_least_on_par_rule() -> None:
    assert gt.at_least_on_par(Stat(0.05, 0.01, 3), 0.7) == v.SUPPORTED
    assert gt.at_least_on_par(Stat(-0.005, 0.001, 3), 0.7) == v.SUPPORTED  # within 1% of 0.7
    assert gt.at_least_on_par(Stat(-0.1, 0.01, 3), 0.7) == v.CONTRADICTED
    assert gt.at_least_on_par(Stat(-0.007, 0.01, 3), 0.7) == v.INCONCLUSIVE
    assert gt.at_least_on_par(None, 0.7) == v.INCONCLUSIVE


def test_claims_on_built_runs(tmp_path: Path) -> None:
    sec = section([2.0, 2.1, 2.2], [-0.1, 0.0, 0.1], [0.8, 0.81, 0.82])
    rows = gt.excess_rows(sec)
    assert len(rows) == 2 * 3  # one pair x 2 layers x targets 5, 10, 20
    assert [r["target"] for r in rows[:3]] == pytest.approx([5.0, 10.0, 20.0])
    for r in rows:
        assert r["y"].mean == pytest.approx(2.1) and r["x"].mean == pytest.approx(0.0, abs=1e-9)
        assert r["diff"].mean == pytest.approx(-2.1) and r["verdict"] == v.SUPPORTED
    rec = gt.recovery_rows(sec)
    assert len(rec) == 2 * 2 * 3  # the pair once (sae_pairs and standard_pairs agree)
    assert all(r["diff"].mean == pytest.approx(0.1) and r["verdict"] == v.SUPPORTED for r in rec)
    assert {r["verdict"] for r in gt.reduced_rows(sec)} == {v.SUPPORTED}
    smaller = section([2.0, 2.1, 2.2], [1.0, 1.1, 1.2], [0.8, 0.81, 0.82])  # rises, less
    assert {r["verdict"] for r in gt.excess_rows(smaller)} == {v.CONTRADICTED}
    assert {r["verdict"] for r in gt.reduced_rows(smaller)} == {v.SUPPORTED}
    worse = section([2.0, 2.1, 2.2], [3.0, 3.1, 3.2], [0.5, 0.51, 0.52])
    assert {r["verdict"] for r in gt.excess_rows(worse)} == {v.CONTRADICTED}
    assert {r["verdict"] for r in gt.reduced_rows(worse)} == {v.CONTRADICTED}
    assert {r["verdict"] for r in gt.recovery_rows(worse)} == {v.CONTRADICTED}
    ctx = Ctx(tmp_path, tmp_path, figures=False)
    text = "\n".join(getattr(b, "text", "") for b in gt.build(sec, ctx))
    assert "excess_l0_norm: SUPPORTED" in text and "recovery: SUPPORTED" in text
    assert "random decoder directions score MCC layer_0 0.300, layer_1 0.300" in text
    assert ctx.record["ground_truth"]["recovery"]["verdict"] == v.SUPPORTED


def test_no_section_without_ground_truth(tmp_path: Path) -> None:
    sec = section([2.0, 2.1, 2.2], [0.0, 0.0, 0.0], [0.7, 0.7, 0.7])
    for r in sec.runs:
        del r.summary["ground_truth_by_norm_decile"]
    assert gt.build(sec, Ctx(tmp_path, tmp_path, figures=False)) == []


def test_each_source_is_its_own_section() -> None:
    runs = [
        built_run(sae, 1.0, 0, 1.0, 0.7, source)
        for sae in ("none", "normalized_sae")
        for source in ("synthetic", "synthetic_flat")
    ]
    secs = sections(runs)
    assert [s.title for s in secs] == ["source.name=synthetic", "source.name=synthetic_flat"]
    assert all(len(s.runs) == 2 and gt.has_ground_truth(s) for s in secs)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("synthetic_study")
    run_sweep(
        base / "sweep",
        "experiment=nsae_synthetic_study",
        "debug=study",
        "source=synthetic",  # narrows the preset's grid to 2 x 5 x 3 = 30 jobs
        "normalization_method=none",
        "logger=csv",
    )
    return base / "sweep"


@pytest.mark.slow
def test_the_synthetic_study_report_renders_the_ground_truth_claims(study: Path) -> None:
    summaries = [json.loads(p.read_text()) for p in study.glob("*/metrics.json")]
    assert len(summaries) == 30 and {s["seed"] for s in summaries} == {0, 1, 2}
    assert all(s["metrics"]["mcc"]["mean"] is not None for s in summaries)
    proc = report(study, "--no-figures")
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (study / "report.md").read_text()
    assert "### Ground truth" in md
    for claim in ("excess_l0_norm", "excess_l0_norm_reduced", "recovery"):
        assert re.search(rf"^#### {claim}: (SUPPORTED|CONTRADICTED|INCONCLUSIVE)$", md, re.M)
    (record,) = json.loads((study / "report.json").read_text())["sections"]
    comparisons = record["ground_truth"]["recovery"]["comparisons"]
    assert len(comparisons) == 2 * 2 * 3  # mcc, f1 x layers 1, 2 x 3 L0 targets
    by_dir = {p.parent.name: json.loads(p.read_text()) for p in study.glob("*/metrics.json")}
    for c in comparisons:  # every comparison traced to the six conditions' 15 + 15 runs
        assert len(c["sources"]) == 30 and set(c["sources"]) <= set(by_dir)
