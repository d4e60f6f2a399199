"""The synthetic study: the ground-truth section's statistics and verdicts on built numbers
(fast), and the preset end to end, shrunk by `debug=study` (slow): a real sweep on the
synthetic source whose report renders the ground-truth claims."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nsae.report import verdicts as v
from nsae.report.groups import sections
from nsae.report.runs import Run, flatten
from nsae.report.sections import Ctx
from nsae.report.sections import ground_truth as gt
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
    kind = "none" if source.endswith("_flat") else "mixture"
    over = {"source.name": source, "source.token_norm.kind": kind}
    cfg = flatten(config(sae, scale=scale, seed=seed, **over))
    return Run(Path("."), f"{sae}_{scale}_{seed}", cfg, "done", summary=summary)


def built_runs(
    std_slopes: list[float], nsae_slopes: list[float], nsae_mcc: list[float], source: str
) -> list[Run]:
    return [
        built_run(sae, scale, seed, slopes[seed], mccs[seed], source)
        for sae, slopes, mccs in (
            ("none", std_slopes, [0.7, 0.71, 0.72]),
            ("normalized_sae", nsae_slopes, nsae_mcc),
        )
        for scale in SCALES
        for seed in range(3)
    ]


def section(std_slopes: list[float], nsae_slopes: list[float], nsae_mcc: list[float]):
    """One section: the standard SAE (MCC 0.7 + 0.01 seed) and the Normalized SAE, both
    with the plain loss and alpha, 3 scales x 3 seeds (slopes and MCC per seed)."""
    (sec,) = sections(built_runs(std_slopes, nsae_slopes, nsae_mcc, "synthetic"))
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


def test_claims_on_built_runs(tmp_path: Path) -> None:
    sec = section([2.0, 2.1, 2.2], [-0.1, 0.0, 0.1], [0.8, 0.81, 0.82])
    (red,) = gt.reduced(sec)
    assert len(red.rows) == 2 * 5  # one pair x 2 layers x 5 targets over L0 5..20
    assert [r["target"] for r in red.rows[:5]] == pytest.approx(
        [5, 5 * 2**0.5, 10, 10 * 2**0.5, 20]
    )
    for r in red.rows:
        assert r["y"].mean == pytest.approx(2.1) and r["x"].mean == pytest.approx(0.0, abs=1e-9)
        assert r["diff"].mean == pytest.approx(-2.1) and r["verdict"] == v.SUPPORTED
    assert red.verdict == v.SUPPORTED
    (first,) = gt.recovery(sec)  # only plain-loss conditions here: no scope shown apart
    # MCC peaks in L0 (no trade-off): read off all points, at five targets over L0 5..20
    assert len(first.rows) == 2 * 2 * 5
    assert [r["target"] for r in first.rows[:5]] == pytest.approx(list(np.geomspace(5, 20, 5)))
    # +0.1 with a CI wholly above 0: better, never contradicted
    assert all(r["diff"].mean == pytest.approx(0.1) for r in first.rows)
    assert first.verdict == v.BETTER
    smaller = section([2.0, 2.1, 2.2], [1.0, 1.1, 1.2], [0.8, 0.81, 0.82])  # rises, less
    assert gt.reduced(smaller)[0].verdict == v.SUPPORTED
    worse = section([2.0, 2.1, 2.2], [3.0, 3.1, 3.2], [0.5, 0.51, 0.52])
    assert gt.reduced(worse)[0].verdict == v.CONTRADICTED
    assert gt.recovery(worse)[0].verdict == v.CONTRADICTED
    same = section([2.0, 2.1, 2.2], [3.0, 3.1, 3.2], [0.7, 0.71, 0.72])
    # equal, but three seeds' CI (about +-0.023) is wider than the 1% margin (0.007)
    assert gt.recovery(same)[0].verdict == v.INCONCLUSIVE
    ctx = Ctx(tmp_path, tmp_path, figures=False)
    text = "\n".join(getattr(b, "text", "") for b in gt.build(sec, ctx))
    assert "excess_l0_norm_reduced: SUPPORTED" in text and "recovery: BETTER" in text
    assert "random decoder directions score MCC layer_0 0.300, layer_1 0.300" in text
    assert ctx.record["ground_truth"]["recovery"]["verdict"] == v.BETTER


@pytest.mark.parametrize(
    ("nsae_premise", "removed", "reduced"),
    [
        ([0.5, 0.6, 0.7], v.SUPPORTED, v.SUPPORTED),  # the premise changes nothing for it
        ([1.5, 1.6, 1.7], v.CONTRADICTED, v.SUPPORTED),  # half the standard SAE's effect
        ([2.5, 2.6, 2.7], v.CONTRADICTED, v.INCONCLUSIVE),  # as much as the standard's
        ([3.5, 3.6, 3.7], v.CONTRADICTED, v.CONTRADICTED),  # more than the standard's
        ([-1.5, -1.4, -1.3], v.CONTRADICTED, v.INCONCLUSIVE),  # as much, the other way
    ],
)
def test_premise_effect_is_a_difference_in_differences(
    tmp_path: Path, nsae_premise: list[float], removed: str, reduced: str
) -> None:
    """Standard SAE: slope 2.1 with the premise, 0.1 without (effect 2.0); Normalized SAE:
    0.6 without the premise and `nsae_premise` with it (effect 0, 1 or 2)."""
    from nsae.report.sections import premise_effect as pe

    mcc = [0.7, 0.71, 0.72]
    runs = built_runs([2.0, 2.1, 2.2], nsae_premise, mcc, "synthetic")
    runs += built_runs([0.0, 0.1, 0.2], [0.5, 0.6, 0.7], mcc, "synthetic_flat")
    ((on, off),) = pe.twins(sections(runs))
    assert [s.runs[0].config["source.name"] for s in (on, off)] == ["synthetic", "synthetic_flat"]
    gt.add_slopes(on.runs)
    gt.add_slopes(off.runs)
    (j_removed,) = pe.judgements(on, off, "removed")
    (j_reduced,) = pe.judgements(on, off, "reduced")
    effect = np.mean(nsae_premise) - 0.6
    for r in j_removed.rows:
        assert r["y"].mean == pytest.approx(2.0) and r["x"].mean == pytest.approx(effect)
        assert r["diff"].mean == pytest.approx(abs(effect) - 2.0)  # |E_x| - |E_y|
    assert (j_removed.verdict, j_reduced.verdict) == (removed, reduced)
    blocks = pe.build(on, off, Ctx(tmp_path, tmp_path, figures=False))
    assert any(f"premise_removed: {removed.upper()}" in getattr(b, "text", "") for b in blocks)


def test_every_premise_source_is_judged_against_the_flat_one(tmp_path: Path) -> None:
    """Three premise sources and one flat source: three pairs, each with its own verdict.
    The standard SAE's slope is 2.1 on every premise source and 0.1 on the flat one (effect
    2.0); the Normalized SAE's is 0.6 on the flat source, 0.6 on `synthetic` (no effect),
    2.6 on `synthetic_lognormal` (as large as the standard SAE's) and 2.6 on
    `synthetic_massive`, where it falls to 0.6 once the outlier tokens are left out."""
    from nsae.metrics.ground_truth import NO_OUTLIERS
    from nsae.report.sections import premise_effect as pe

    mcc, std = [0.7, 0.71, 0.72], [2.0, 2.1, 2.2]
    runs = built_runs([0.0, 0.1, 0.2], [0.5, 0.6, 0.7], mcc, "synthetic_flat")
    runs += built_runs(std, [0.5, 0.6, 0.7], mcc, "synthetic")
    runs += built_runs(std, [2.5, 2.6, 2.7], mcc, "synthetic_lognormal")
    massive = built_runs(std, [2.5, 2.6, 2.7], mcc, "synthetic_massive")
    for r, clean in zip(massive, built_runs(std, [0.5, 0.6, 0.7], mcc, "synthetic"), strict=True):
        r.summary[gt.GT_KEY + NO_OUTLIERS] = clean.summary[gt.GT_KEY]
    runs += massive
    pairs = pe.twins(sections(runs))
    assert [(pe.name(on), pe.name(off)) for on, off in pairs] == [
        (src, "synthetic_flat") for src in ("synthetic", "synthetic_lognormal", "synthetic_massive")
    ]
    verdicts = {}
    for on, off in pairs:
        gt.add_slopes(on.runs)
        gt.add_slopes(off.runs)
        for j in pe.judgements(on, off, "removed"):
            verdicts[(pe.name(on), j.scope)] = j.verdict
    pair = "Normalized SAE, plain loss, alpha vs standard SAE, plain loss, alpha"
    assert verdicts == {
        ("synthetic", pair): v.SUPPORTED,
        ("synthetic_lognormal", pair): v.CONTRADICTED,
        ("synthetic_massive", pair): v.CONTRADICTED,
        ("synthetic_massive", pair + gt.EXCLUDED): v.SUPPORTED,
    }
    assert pe.where(*pairs[2]) == "across sources: synthetic_massive vs synthetic_flat"
    ctxs = [Ctx(tmp_path, tmp_path, f"x{j}_", figures=False) for j in range(3)]
    # doubling's findings per section title reach the pair's verdicts, naming the source
    why = {on.title: {"standard SAE, plain loss, alpha": "L0 moved -20%"} for on, _ in pairs}
    why[pairs[0][1].title] = {"standard SAE, plain loss, alpha": "L0 moved -5%"}
    for (on, off), c in zip(pairs, ctxs, strict=True):
        c.unconverged = pe.unconverged(on, off, why)
    blocks = [pe.build(*pair, c, first=c is ctxs[0]) for pair, c in zip(pairs, ctxs, strict=True)]
    texts = [[getattr(b, "text", "") for b in bs] for bs in blocks]
    caveat = (
        "standard SAE, plain loss, alpha not converged (on synthetic_lognormal: L0 moved -20%; "
        "on synthetic_flat: L0 moved -5%)"
    )
    assert all(caveat in e["caveats"] for e in ctxs[1].verdicts if e["verdict"] != "not judged")
    assert ["the premise's effect" in t[0] for t in texts] == [True, False, False]
    assert [c.record["premise_effect"]["premise_removed"]["verdict"] for c in ctxs] == [
        v.SUPPORTED,
        v.CONTRADICTED,
        v.CONTRADICTED,
    ]


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
    assert [s.title for s in secs] == [
        "source.name=synthetic, source.token_norm.kind=mixture",
        "source.name=synthetic_flat, source.token_norm.kind=none",
    ]
    assert all(len(s.runs) == 2 and gt.has_ground_truth(s) for s in secs)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("synthetic_study")
    run_sweep(
        base / "sweep",
        "experiment=nsae_synthetic_study",
        "debug=study",
        "source=synthetic",  # narrows the preset's grid to 2 x 5 x 3 = 30 jobs, and 4 doubled
        "normalization_method=none",
        "seed=0,1,2",
        "logger=csv",
    )
    return base / "sweep"


@pytest.mark.slow
def test_the_synthetic_study_report_renders_the_ground_truth_claims(study: Path) -> None:
    every = [json.loads(p.read_text()) for p in study.glob("*/metrics.json")]
    summaries = [s for s in every if s["steps"] == 8]  # debug=study's steps; 16: doubled
    assert len(summaries) == 30 and {s["seed"] for s in summaries} == {0, 1, 2}
    assert len(every) == 34 and {s["steps"] for s in every} == {8, 16}
    assert all(s["metrics"]["mcc"]["mean"] is not None for s in summaries)
    proc = report(study, "--no-figures")
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (study / "report.md").read_text()
    assert "### Ground truth" in md and "### Convergence by doubling" in md
    for claim in ("excess_l0_norm_reduced", "recovery"):
        assert re.search(rf"^#### {claim}: (SUPPORTED|BETTER|CONTRADICTED|INCONCLUSIVE)$", md, re.M)
    assert 'id="verdicts"' not in md and "id='verdicts'" in (study / "report.html").read_text()
    (record,) = json.loads((study / "report.json").read_text())["sections"]
    first = record["ground_truth"]["recovery"]["judgements"][0]
    comparisons = [c for c in first["comparisons"] if c["target"] is not None]
    assert comparisons and {c["metric"] for c in comparisons} == {"mcc", "f1"}
    by_dir = {p.parent.name: json.loads(p.read_text()) for p in study.glob("*/metrics.json")}
    for c in comparisons:  # every comparison traced to the two conditions' 15 + 15 runs
        assert len(c["sources"]) == 30 and set(c["sources"]) <= set(by_dir)


def test_a_premise_that_lowers_the_standard_slope_reduces_no_bias() -> None:
    """The premise lowers the standard SAE's slope (-2.1 against 0.1 flat: E_y = -2.2) and
    leaves the Normalized SAE's alone (E_x = 0): |E_x| < |E_y|, but there is no bias to
    reduce, so both claims are contradicted, not supported."""
    from nsae.report.sections import premise_effect as pe

    mcc = [0.7, 0.71, 0.72]
    runs = built_runs([-2.2, -2.1, -2.0], [0.5, 0.6, 0.7], mcc, "synthetic")
    runs += built_runs([0.0, 0.1, 0.2], [0.5, 0.6, 0.7], mcc, "synthetic_flat")
    ((on, off),) = pe.twins(sections(runs))
    gt.add_slopes(on.runs)
    gt.add_slopes(off.runs)
    (reduced,) = pe.judgements(on, off, "reduced")
    assert all(r["diff"].mean == pytest.approx(-2.2) for r in reduced.rows)
    assert reduced.verdict == v.CONTRADICTED
    assert pe.judgements(on, off, "removed")[0].verdict == v.CONTRADICTED


def test_without_one_flat_source_the_report_says_why_no_premise_effect() -> None:
    from nsae.report.sections import premise_effect as pe

    mcc = [0.7, 0.71, 0.72]
    premise = built_runs([2.0, 2.1, 2.2], [0.5, 0.6, 0.7], mcc, "synthetic")
    flats = [built_runs([0.0] * 3, [0.5] * 3, mcc, f"{i}_flat") for i in ("a", "b")]
    for runs, why in ((premise, "no flat source"), (premise + flats[0] + flats[1], "2 flat")):
        secs = sections(runs)
        assert pe.twins(secs) == []
        assert why in " ".join(getattr(b, "text", "") for b in pe.unpaired(secs))
    assert pe.unpaired(sections(premise + flats[0])) == []  # paired: judged, no note


def test_the_published_study_judges_every_premise_source_against_the_flat_one() -> None:
    """docs/results/synthetic_study/report.json, as the report wrote it: one across-sources
    record per premise source, and their verdicts in the table under that pair's name."""
    root = Path(__file__).resolve().parents[1]
    record = json.loads((root / "docs/results/synthetic_study/report.json").read_text())
    premises = ["synthetic", "synthetic_lognormal", "synthetic_massive"]
    pairs = record["across_sources"]
    assert sorted(p["premise"] for p in pairs) == premises
    assert {p["flat"] for p in pairs} == {"synthetic_flat"}
    assert all({"premise_removed", "premise_reduced"} <= set(p["premise_effect"]) for p in pairs)
    across = {e["where"] for e in record["verdicts"] if e["where"].startswith("across")}
    assert across == {f"across sources: {p} vs synthetic_flat" for p in premises}
