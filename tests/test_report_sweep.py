"""`python -m nsae.report` on hand-built sweeps with known numbers: grouping never mixes
settings, seeds aggregate to mean ± t-CI, skipped/failed cells, matched L0 per layer with
the extrapolation flag, claim verdicts, and a self-contained HTML page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from nsae.report.__main__ import build, main
from tests.test_report_fixture import config, write_failed, write_run, write_skipped

T975_DF1 = 12.706204736174698


def report(sweep: Path) -> dict:
    """The report's numbers (figures are tested once, in the claims sweep)."""
    build(sweep, figures=False)
    return json.loads((sweep / "report.json").read_text())


def cells(section: dict, sae: str = "none", norm: str = "none", coeff: str = "alpha") -> list:
    return [
        c for c in section["cells"]
        if (c["condition"]["sae_type"], c["condition"]["normalization_method"],
            c["condition"]["coeff"]) == (sae, norm, coeff)
    ]  # fmt: skip


def test_two_max_steps_are_two_sections_never_one_curve(tmp_path: Path) -> None:
    for steps, base in ((100, 10.0), (200, 100.0)):
        for scale in (0.5, 1.0, 2.0):
            cfg = config(scale=scale, **{"trainer.max_steps": steps})
            write_run(tmp_path, f"s{steps}_{scale}", cfg, {"l0": base / scale})
    rec = report(tmp_path)
    titles = [s["title"] for s in rec["sections"]]
    assert titles == ["trainer.max_steps=100", "trainer.max_steps=200"]
    for sec, steps in zip(rec["sections"], (100, 200), strict=True):
        assert all(r.startswith(f"s{steps}_") for r in sec["runs"]) and len(sec["runs"]) == 3
        assert all(src.startswith(f"s{steps}_") for c in sec["cells"] for src in c["sources"])
        base = 10.0 if steps == 100 else 100.0
        targets = list(np.geomspace(base / 2, base * 2, 5))  # five, inside the shared range
        assert sec["matched_l0"]["layer_0"]["targets"] == pytest.approx(targets)
    md = (tmp_path / "report.md").read_text()
    assert "## Section: trainer.max_steps=100" in md and "## Section: trainer.max_steps=200" in md


def test_noise_std_splits_normalized_runs_and_standard_runs_join_both(tmp_path: Path) -> None:
    write_run(tmp_path, "std", config("none"))
    for noise in (0.1, 0.2):
        write_run(tmp_path, f"n{noise}", config("normalized_sae", **{"sae.noise_std": noise}))
    rec = report(tmp_path)
    assert [s["title"] for s in rec["sections"]] == [
        "sae.noise_std (normalized_sae, none)=0.1",
        "sae.noise_std (normalized_sae, none)=0.2",
    ]
    assert [s["runs"] for s in rec["sections"]] == [["n0.1", "std"], ["n0.2", "std"]]


def test_a_learning_rate_per_condition_is_one_section_two_in_one_condition_are_two(
    tmp_path: Path,
) -> None:
    """The study's tuned learning rates differ between conditions: one section. Two learning
    rates within one condition never mix: two sections."""
    write_run(tmp_path, "std", config("none", **{"optim.lr": 0.001}))
    write_run(tmp_path, "n", config("normalized_sae", **{"optim.lr": 0.01}))
    (sec,) = report(tmp_path)["sections"]
    assert sec["runs"] == ["n", "std"]
    write_run(tmp_path, "n2", config("normalized_sae", **{"optim.lr": 0.003}))
    rec = report(tmp_path)
    assert [s["title"] for s in rec["sections"]] == [
        "optim.lr (normalized_sae, none)=0.003",
        "optim.lr (normalized_sae, none)=0.01",
    ]
    assert [s["runs"] for s in rec["sections"]] == [["n2", "std"], ["n", "std"]]


def test_l1_l0_scope_names_each_conditions_own_tuned_noise(tmp_path: Path) -> None:
    """The tuned noise differs between the Normalized SAE's losses (one section): the L1/L0
    claim of each condition names the noise it was trained at, not every noise in the sweep."""
    for norm, noise in (("none", 0.1), ("input_norm", 0.3)):
        cfg = config("normalized_sae", norm, **{"sae.noise_std": noise})
        write_run(tmp_path, f"n_{norm}", cfg, {"l1_l0_ratio": 0.95})
    rec = report(tmp_path)
    assert len(rec["sections"]) == 1
    scopes = sorted(e["scope"] for e in rec["verdicts"] if "noise_std" in e["scope"])
    assert scopes == [
        "Normalized SAE, loss / ||x||, alpha, measured at noise_std 0.3",
        "Normalized SAE, plain loss, alpha, measured at noise_std 0.1",
    ]


def test_seeds_mean_and_ci_by_hand(tmp_path: Path) -> None:
    for seed, ev in ((0, 0.5), (1, 0.7)):
        write_run(tmp_path, f"a{seed}", config(seed=seed), {"explained_variance": ev})
    write_run(tmp_path, "b0", config("normalized_sae"), {"explained_variance": 0.3})
    (sec,) = report(tmp_path)["sections"]
    (cell,) = cells(sec)
    ev = cell["metrics"]["explained_variance"]
    half = T975_DF1 * math.sqrt(0.02) / math.sqrt(2)  # s^2 = (0.1^2 + 0.1^2) / 1
    assert ev["n"] == 2 and ev["mean"] == pytest.approx(0.6)
    assert (ev["ci_lo"], ev["ci_hi"]) == pytest.approx((0.6 - half, 0.6 + half))
    assert ev["sources"] == ["a0", "a1"] and cell["seeds"] == [0, 1]
    one = cells(sec, "normalized_sae")[0]["metrics"]["explained_variance"]
    assert (one["n"], one["ci_lo"], one["mean"]) == (1, None, 0.3)
    md = (tmp_path / "report.md").read_text()
    assert f"0.6 ± {half:.2g} (n=2)" in md and "0.3 (n=1)" in md


def test_skipped_failed_and_unfinished_cells(tmp_path: Path) -> None:
    write_run(tmp_path, "alpha", config("normalized_sae", "input_norm_squared"), {"l0": 7.0})
    write_skipped(tmp_path, "beta", config("normalized_sae", "input_norm_squared", "beta"), "alpha")
    write_failed(tmp_path, "boom", config("none", "input_norm"), "NaN loss at step 3")
    write_failed(tmp_path, "died", config("none", "none"), None)
    md, _page, warnings = build(tmp_path, figures=False)
    (sec,) = json.loads((tmp_path / "report.json").read_text())["sections"]
    (beta,) = cells(sec, "normalized_sae", "input_norm_squared", "beta")
    assert beta["status"] == "= alpha (k = 0)" and beta["condition"]["k"] == 0.0
    assert beta["metrics"]["l0"]["mean"] == 7.0 and beta["sources"] == ["alpha"]
    assert cells(sec, "none", "input_norm")[0]["status"] == "FAILED: NaN loss at step 3"
    assert cells(sec, "none", "none")[0]["status"] == "unfinished"
    assert sorted(w.split(":")[0] for w in warnings) == ["boom", "died"]
    text = md.read_text()
    assert "| = alpha (k = 0) |" in text and "FAILED: NaN loss at step 3" in text


def test_matched_l0_per_layer_by_hand_with_extrapolation_flag(tmp_path: Path) -> None:
    # A = standard SAE: layer 0 L0 10/40 (EV .8/.9), layer 1 L0 5/10 (EV .6/.7)
    # B = Normalized SAE: layer 0 L0 20/80 (EV .7/.9), layer 1 L0 20/40 (EV .5/.6)
    for sae, pts in (
        ("none", [([40.0, 10.0], [0.9, 0.7]), ([10.0, 5.0], [0.8, 0.6])]),
        ("normalized_sae", [([80.0, 40.0], [0.9, 0.6]), ([20.0, 20.0], [0.7, 0.5])]),
    ):
        for scale, (l0, ev) in zip((1.0, 2.0), pts, strict=True):
            write_run(tmp_path, f"{sae}_{scale}", config(sae, scale=scale),
                      {"l0": l0, "explained_variance": ev})  # fmt: skip
    (sec,) = report(tmp_path)["sections"]
    m = sec["matched_l0"]

    def value(layer: int, cond: str, target: float) -> tuple[float, bool]:
        (row,) = [
            r for r in m[f"layer_{layer}"]["values"]
            if r["condition"] == cond and r["metric"] == "explained_variance"
            and r["target"] == pytest.approx(target)
        ]  # fmt: skip
        return row["value"], row["extrapolated"]

    a, b = "standard SAE, plain loss, alpha", "Normalized SAE, plain loss, alpha"
    # layer 0: the curves share L0 20..40 (standard 10..40, Normalized 20..80)
    assert m["layer_0"]["targets"] == pytest.approx(list(np.geomspace(20, 40, 5)))
    assert value(0, a, 20.0) == (pytest.approx(0.85), False)  # log 20 halfway 10..40
    assert value(0, b, 20.0) == (pytest.approx(0.7), False)
    assert value(0, b, 40.0) == (pytest.approx(0.8), False)
    # layer 1: standard 5..10, Normalized 20..40 share no L0: no target, no number
    assert m["layer_1"]["targets"] == [] and m["layer_1"]["values"] == []
    claims = sec["claims"]  # one seed each: no CI, so no verdict can be reached; no beta
    # condition, so the claims about beta (and the write-up's configuration) are not judged
    assert {c["verdict"] for c in claims.values()} == {"inconclusive", "not judged"}
    assert claims["cross_layer_cv"]["verdict"] == "not judged"
    assert {j["verdict"] for c in claims.values() for j in c["judgements"]} <= {"inconclusive"}


@pytest.fixture(scope="module")
def claims_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seeds per cell, numbers built so that claims 1-4 hold and claim 5 fails; the
    report written by `python -m nsae.report`'s main."""
    sweep = tmp_path_factory.mktemp("claims")
    conds = [("none", n, "alpha") for n in ("none", "input_norm", "input_norm_squared")]
    conds += [("normalized_sae", "none", "alpha"), ("none", "none", "beta")]
    conds += [("normalized_sae", "none", "beta")]
    for sae, norm, coeff in conds:
        for scale, l0 in ((1.0, 10.0), (2.0, 5.0)):
            for seed in range(3):
                d = 0.01 * seed
                vals = {
                    "l0": l0,
                    "feature_suppression": (0.95 if sae != "none" else 0.8) + d,
                    "relative_reconstruction_bias": (0.97 if sae != "none" else 0.85) + d,
                    "l0_norm_slope": (0.5 + d if norm == "none" else -0.1 + 0.1 * seed),
                    "l0_cv": (0.1 if coeff == "beta" else 0.3) + d,
                    "l1_l0_ratio": 0.95 + d,
                    # quality rises with L0, so every point is on the Pareto frontier
                    "reconstruction_score": (0.5 if sae != "none" else 0.9) + 0.001 * l0,
                    "kl": (0.9 if sae != "none" else 0.5) - 0.001 * l0,
                }
                if (sae, norm, coeff) == ("none", "none", "alpha"):  # L0 follows the norm
                    vals["l0"] = [l0, 2 * l0]  # type: ignore[assignment]
                write_run(sweep, f"{sae}_{norm}_{coeff}_{scale}_{seed}",
                          config(sae, norm, coeff, scale, seed), vals,
                          layer_norms=(10.0, 20.0))  # fmt: skip
    assert main([str(sweep)]) == 0
    return sweep


def test_claim_verdicts_from_built_numbers(claims_sweep: Path) -> None:
    (sec,) = json.loads((claims_sweep / "report.json").read_text())["sections"]
    verdict = {k: c["verdict"] for k, c in sec["claims"].items()}
    assert verdict == {
        "feature_suppression": "supported",
        "norm_l0_across_layers": "supported",
        "cross_layer_cv": "supported",
        "l1_l0": "supported",
        "on_par": "contradicted",
    }
    (j, *_) = sec["claims"]["feature_suppression"]["judgements"]
    assert "write-up" in j["scope"] and j["verdict"] == "supported"
    fs = j["comparisons"][0]
    # |1 - FS|: normalized 0.05, 0.04, 0.03 vs standard 0.2, 0.19, 0.18 -> difference -0.15
    assert fs["diff"]["mean"] == pytest.approx(-0.15) and fs["diff"]["n"] == 3
    prefixes = ("normalized_sae_none_beta_", "none_none_alpha_")  # the write-up's comparison
    assert fs["sources"] and all(s.startswith(prefixes) for s in fs["sources"])
    md = (claims_sweep / "report.md").read_text()
    assert "#### feature_suppression: SUPPORTED" in md and "#### on_par: CONTRADICTED" in md


def test_html_is_self_contained_and_plots_non_empty(claims_sweep: Path) -> None:
    html = (claims_sweep / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"#][^'"]*)['"]""", html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "report_files/" not in html
    md = (claims_sweep / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 15
    for rel in images:
        png = claims_sweep / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, rel
    for name in ("pareto_explained_variance", "pareto_feature_suppression", "pareto_kl",
                 "decile_l0", "decile_nmse", "training_L0", "train_vs_eval_l0",
                 "feature_density", "decoder_norms", "nn_max_cos", "norm_histogram"):  # fmt: skip
        assert f"report_files/{name}.png" in images
    assert "are all 1 (unit-norm constraint)" in md
    assert (
        "| standard SAE, plain loss, alpha | 0 | 50 ± 0 (n=3) | 0.9 ± 0 (n=3) | 0.6 ± 0 (n=3) |"
        in md
    )  # pos. 0
    # training L0 = 10 + 100 / (step + 1): from step 80 to step 100 it moves by
    move = abs((10 + 100 / 101) - (10 + 100 / 81)) / (10 + 100 / 101)
    assert f"| standard SAE, plain loss, alpha | yes ({move:.1%}, {move:.1%}, {move:.1%}) |" in md
