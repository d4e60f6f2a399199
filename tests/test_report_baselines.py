"""experiment=nsae_baselines in the report: the baseline arms (sae.l1_weighting,
data.normalize_activations, topk swept over sae.k) are conditions of ONE section, with
readable labels, never sections of their own; topk's runs over k form one curve."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from nsae.report.__main__ import build
from nsae.report.groups import order, sections
from nsae.report.runs import load_sweep
from tests.test_report_fixture import config, write_run

SCALES = (0.5, 1.0, 2.0)
KS = (8, 16, 32, 64, 128)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {  # label -> (sae_type, overrides)
    "normalized_sae/none/alpha": ("normalized_sae", {}),
    "none/none/alpha": ("none", {}),
    "none+decoder_norm/none/alpha": ("none", {"sae.l1_weighting": "decoder_norm"}),
    "none+expected_norm/none/alpha": ("none", {"data.normalize_activations": "expected_norm"}),
}
WORDS = [  # the arms' labels in the report, in ARMS order
    "Normalized SAE, plain loss, alpha",
    "standard SAE, plain loss, alpha",
    "standard SAE + decoder-norm L1, plain loss, alpha",
    "standard SAE + expected-norm rescaling, plain loss, alpha",
]
TOPK = {"sae.k_aux": None, "sae.aux_coeff": 0.03125, "sae.dead_steps": 250}


def ev_of(l0: float, offset: float) -> float:
    """Explained variance linear in log2 L0: interpolation in log L0 is exact."""
    return offset + 0.05 * math.log2(l0)


def baselines_sweep(sweep: Path) -> None:
    for j, (name, (sae_type, over)) in enumerate(ARMS.items()):
        for scale in SCALES:
            l0 = 32.0 / scale
            keys = {"sae.l1_weighting": "none", "data.normalize_activations": "none"} | over
            cfg = config(sae_type, scale=scale, alpha=scale, **keys)
            values = {"l0": l0, "explained_variance": ev_of(l0, 0.1 * j)}
            write_run(sweep, f"{name.split('/')[0]}_{scale}", cfg, values)
    for k in KS:
        cfg = config(
            "topk", alpha=0.0, **TOPK, **{"sae.k": k, "data.normalize_activations": "none"}
        )
        write_run(sweep, f"topk_{k}", cfg, {"l0": float(k), "explained_variance": ev_of(k, 0.5)})


def test_baseline_arms_are_conditions_of_one_section(tmp_path: Path) -> None:
    baselines_sweep(tmp_path)
    (section,) = sections(load_sweep(tmp_path))
    assert section.title == "all runs"
    labels = [f"{c[0]}/{c[1]}/{c[2]}" for c in section.cells]
    assert labels == [*ARMS][1:2] + [*ARMS][2:] + [*ARMS][:1] + ["topk/none/alpha"]
    for cond, cells in section.cells.items():
        if cond[0] == "topk":
            assert [c.sae_k for c in cells] == list(KS)
            assert [len(c.runs) for c in cells] == [1] * len(KS)
            assert section.representative(cond).sae_k == 32  # the middle k
        else:
            assert [c.alpha for c in cells] == list(SCALES) and cells[0].sae_k is None
            assert section.representative(cond).alpha == 1.0


def test_report_json_labels_and_topk_curve_over_k(tmp_path: Path) -> None:
    baselines_sweep(tmp_path)
    build(tmp_path, figures=False)
    rec = json.loads((tmp_path / "report.json").read_text())
    (sec,) = rec["sections"]
    arms = {c["condition"]["sae_type"] for c in sec["cells"]}
    assert arms == {"none", "normalized_sae", "none+decoder_norm", "none+expected_norm", "topk"}
    matched = sec["matched_l0"]["layer_0"]
    assert len(matched["targets"]) == 5
    rows = [v for v in matched["values"] if v["metric"] == "explained_variance"]
    assert {v["condition"] for v in rows} == {*WORDS, "TopK SAE, plain loss, alpha"}
    for v in rows:  # every arm interpolated at the shared targets, topk over its k
        j = [*WORDS, "TopK SAE, plain loss, alpha"].index(v["condition"])
        offset = 0.5 if j == len(ARMS) else 0.1 * j
        assert v["value"] == pytest.approx(ev_of(v["target"], offset))
        assert not v["extrapolated"]
    md = (tmp_path / "report.md").read_text()
    assert "standard SAE + expected-norm rescaling, plain loss, alpha" in md
    assert "## Section: all runs" in md


def test_runs_without_the_new_keys_join_their_default_condition(tmp_path: Path) -> None:
    write_run(tmp_path, "old", config("none"))  # a sweep from before the options existed
    over = {"sae.l1_weighting": "none", "data.normalize_activations": "none"}
    write_run(tmp_path, "new", config("none", seed=1, **over))
    (section,) = sections(load_sweep(tmp_path))
    ((cond, (cell,)),) = section.cells.items()
    assert cond == ("none", "none", "alpha", None) and len(cell.runs) == 2


def test_order_puts_each_types_baselines_after_it() -> None:
    conds = [
        ("topk", "none", "alpha", None),
        ("none+expected_norm", "none", "alpha", None),
        ("normalized_sae", "none", "alpha", None),
        ("none", "input_norm", "alpha", None),
        ("none", "none", "beta", 1.0),
        ("none", "none", "alpha", None),
    ]
    assert [c[0:3] for c in sorted(conds, key=order)] == [
        ("none", "none", "alpha"),
        ("none", "none", "beta"),
        ("none", "input_norm", "alpha"),
        ("none+expected_norm", "none", "alpha"),
        ("normalized_sae", "none", "alpha"),
        ("topk", "none", "alpha"),
    ]


@pytest.mark.slow
def test_the_experiments_three_commands_compose_every_arm_into_one_sweep_dir() -> None:
    from nsae.config import check_group_choices
    from nsae.preflight import compose_jobs

    _, jobs, _ = compose_jobs(["-m", "experiment=nsae_baselines"])
    for arm in ("topk", "batchtopk"):  # their own sweep axes: sae.k x seed, coeff.scale fixed
        check_group_choices([f"+baseline={arm}"])
        jobs += compose_jobs(["-m", "experiment=nsae_baselines", f"+baseline={arm}"])[1]
    arms = {}
    seeds = (0, 1, 2, 3, 4)
    for job in jobs:
        c = job.cfg
        arm = (c.sae.type, c.sae.get("l1_weighting"), c.data.normalize_activations)
        arms.setdefault(arm, set()).add((c.coeff.scale, c.sae.get("k"), c.seed))
        assert job.run_dir.parent.name == "baselines"
        assert (c.trainer.max_steps, c.sae.expansion_factor, c.optim.decay) == (400, 4, "cosine")
        assert (c.loss.normalization_method, c.coeff.mode) == ("none", "alpha")
    scales = {(s, None, seed) for s in (0.25, 0.5, 1.0, 2.0, 4.0) for seed in seeds}
    assert arms == {
        ("normalized_sae", "none", "none"): scales,
        ("none", "none", "none"): scales,
        ("none", "decoder_norm", "none"): scales,
        ("none", "none", "expected_norm"): scales,
        ("jumprelu", None, "none"): scales,
        ("topk", None, "none"): {(1.0, k, seed) for k in KS for seed in seeds},
        ("batchtopk", None, "none"): {(1.0, k, seed) for k in KS for seed in seeds},
    }
    assert len({job.run_dir for job in jobs}) == 125 + 25 + 25  # no run dir shared


def verdict_sweep(sweep: Path, seeds: tuple[int, ...]) -> None:
    """The Normalized SAE beside three baseline arms whose reconstruction and shrinkage are
    set by hand at every L0: decoder-norm L1 worse than it on both (it is better, less
    shrunk), expected-norm rescaling equal (on par; same shrinkage), TopK far better (it is
    worse, more shrunk)."""
    arms = {  # arm -> (sae_type, overrides, reconstruction offset, feature suppression)
        "nsae": ("normalized_sae", {}, 0.0, 0.95),
        "decoder": ("none", {"sae.l1_weighting": "decoder_norm"}, -0.05, 0.80),
        "expected": ("none", {"data.normalize_activations": "expected_norm"}, 0.0, 0.95),
        "topk": ("topk", {**TOPK}, 0.2, 0.99),
        # the same reconstruction score, a KL far below (on par in one metric, worse in
        # the other): the claim on both is contradicted
        "jumprelu": ("jumprelu", {}, 0.0, 0.95),
    }
    for j, (name, (sae_type, over, offset, fs)) in enumerate(arms.items()):
        for seed in seeds:  # a wobble of mean 0 over the seeds, paired differently per arm
            wobble = 0.0005 * ((seed + j) % len(seeds) - (len(seeds) - 1) / 2)
            for i, scale in enumerate(SCALES if sae_type != "topk" else KS):
                l0 = 32.0 / scale if sae_type != "topk" else float(scale)
                keys = {"sae.l1_weighting": "none", "data.normalize_activations": "none"}
                keys |= over | ({"sae.k": scale} if sae_type == "topk" else {})
                alpha = 0.0 if sae_type == "topk" else scale
                cfg = config(sae_type, scale=1.0 if sae_type == "topk" else scale,
                             alpha=alpha, seed=seed, **keys)  # fmt: skip
                score = 0.5 + offset + 0.05 * math.log2(l0) + wobble
                values = {
                    "l0": l0,
                    "reconstruction_score": score,
                    "kl": 1.0 - score - (0.1 if sae_type == "jumprelu" else 0.0),
                    "feature_suppression": fs + wobble,
                    "relative_reconstruction_bias": fs + wobble,
                }
                write_run(sweep, f"{name}_{i}_seed{seed}", cfg, values)


def baseline_verdicts(sweep: Path) -> dict[tuple[str, str], str]:
    build(sweep, figures=False)
    rec = json.loads((sweep / "report.json").read_text())
    return {
        (e["key"], e["scope"].split(" vs ")[1]): e["verdict"]
        for e in rec["verdicts"]
        if e["key"].startswith("baselines_")
    }


def test_the_normalized_sae_is_judged_against_each_baseline_arm(tmp_path: Path) -> None:
    """Better than a worse arm, on par with an equal one, contradicted against a far
    better one: each rule can pass and fail, one scope per arm. Seeds add a small wobble
    of mean 0, paired differently per arm, so the CIs have width."""
    verdict_sweep(tmp_path, seeds=(0, 1, 2))
    got = baseline_verdicts(tmp_path)
    decoder = "standard SAE + decoder-norm L1, plain loss, alpha"
    expected = "standard SAE + expected-norm rescaling, plain loss, alpha"
    topk = "TopK SAE, plain loss, alpha"
    assert got == {
        ("baselines_on_par", decoder): "better",
        ("baselines_on_par", expected): "supported",
        ("baselines_on_par", topk): "contradicted",
        ("baselines_shrinkage", decoder): "supported",
        ("baselines_shrinkage", expected): "inconclusive",
        ("baselines_shrinkage", topk): "contradicted",
        ("baselines_on_par", "JumpReLU SAE, plain loss, alpha"): "contradicted",
        ("baselines_shrinkage", "JumpReLU SAE, plain loss, alpha"): "inconclusive",
    }
    md = (tmp_path / "report.md").read_text()
    assert "### Against today's baselines" in md
    summary = md.split("## Summary", 1)[1].split("|", 1)[0]  # per arm, not its first scope
    on_par = summary.split("reconstruction on par with today's SAEs: ", 1)[1].split("; less", 1)[0]
    assert "**better** against standard SAE + decoder-norm L1" in on_par
    assert "**supported** against standard SAE + expected-norm rescaling" in on_par
    assert re.search(
        r"\*\*contradicted\*\* against (TopK SAE, JumpReLU SAE|JumpReLU SAE, TopK SAE)", on_par
    )


def test_one_seed_leaves_every_baseline_verdict_inconclusive(tmp_path: Path) -> None:
    verdict_sweep(tmp_path, seeds=(0,))
    assert set(baseline_verdicts(tmp_path).values()) == {"inconclusive"}


def test_a_sweep_without_baseline_arms_has_no_baselines_part(tmp_path: Path) -> None:
    for seed in (0, 1):
        for scale in SCALES:
            for sae_type in ("none", "normalized_sae"):
                write_run(tmp_path, f"{sae_type}_{scale}_{seed}", config(sae_type, scale=scale,
                          seed=seed), {"l0": 32.0 / scale})  # fmt: skip
    assert baseline_verdicts(tmp_path) == {}
    assert "Against today's baselines" not in (tmp_path / "report.md").read_text()
