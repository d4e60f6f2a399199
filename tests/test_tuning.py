"""experiment=nsae_tuning: the sweeper's `only` axes, the tuning rule on constructed
candidates (closed-form KL at matched L0), and the study presets' defaults against the
published choices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nsae.errors import NsaeError
from nsae.report.runs import Run
from nsae.report.tuning import caveats, choices, choose, is_tuning, untuned
from nsae.sweep import restrict_axes, restricted_notes
from tests.conftest import ROOT

RESULTS = ROOT / "docs/results"  # the published tuning reports


def product(**axes: list[str]) -> list[list[str]]:
    import itertools

    keys = list(axes)
    return [
        [f"{k}={v}" for k, v in zip(keys, vals, strict=True)]
        for vals in itertools.product(*axes.values())
    ]


def test_only_sweeps_an_axis_where_its_condition_holds() -> None:
    jobs = product(sae_type=["none", "normalized_sae"], lr=["1", "2"], noise=["0", "0.5"])
    out = restrict_axes(jobs, {"noise": ["sae_type=normalized_sae"]})
    assert out == [
        ["sae_type=none", "lr=1"],
        ["sae_type=none", "lr=2"],
        ["sae_type=normalized_sae", "lr=1", "noise=0"],
        ["sae_type=normalized_sae", "lr=1", "noise=0.5"],
        ["sae_type=normalized_sae", "lr=2", "noise=0"],
        ["sae_type=normalized_sae", "lr=2", "noise=0.5"],
    ]
    assert restrict_axes(jobs, {}) == jobs
    two = restrict_axes(jobs, {"noise": ["sae_type=normalized_sae", "lr=2"]})  # both must hold
    assert len(two) == 2 + 1 + 2 and ["sae_type=normalized_sae", "lr=1"] in two
    either = restrict_axes(jobs, {"noise": [["sae_type=normalized_sae", "lr=2"], ["lr=1"]]})
    assert either == [
        ["sae_type=none", "lr=1", "noise=0"],
        ["sae_type=none", "lr=1", "noise=0.5"],
        ["sae_type=none", "lr=2"],
        ["sae_type=normalized_sae", "lr=1", "noise=0"],
        ["sae_type=normalized_sae", "lr=1", "noise=0.5"],
        ["sae_type=normalized_sae", "lr=2", "noise=0"],
        ["sae_type=normalized_sae", "lr=2", "noise=0.5"],
    ]


@pytest.mark.parametrize(
    ("only", "words"),
    [
        ({"noise": ["sae_type"]}, "is not an override"),
        ({"noise": [["sae_type=x"], ["lr"]]}, "is not an override"),
        ({"nois": ["sae_type=x"]}, "valid: lr"),
    ],
)
def test_only_refuses_bad_entries_in_one_line(only: dict, words: str) -> None:
    jobs = product(sae_type=["none"], lr=["1"], noise=["0"])
    with pytest.raises(NsaeError, match=words) as err:
        restrict_axes(jobs, only)
    assert "\n" not in str(err.value)


def run(
    sae: str, lr: float, noise: float | None, seed: int, l0: list[float], kl: list[float]
) -> Run:
    """A finished run with per-layer L0 and KL (one entry per layer)."""
    cfg = {"sae.type": sae, "loss.normalization_method": "none", "coeff.mode": "alpha"}
    cfg["data.eval_split"] = "validation"
    cfg |= {"optim.lr": lr, "seed": seed} | ({} if noise is None else {"sae.noise_std": noise})
    layer = lambda vals: {f"layer_{i}": v for i, v in enumerate(vals)}  # noqa: E731
    summary = {
        "layers": list(range(len(l0))),
        "metrics": {"l0": layer(l0), "kl": layer(kl), "frac_alive": layer([1.0] * len(l0))},
    }
    return Run(Path(f"{sae}_{lr}_{noise}_{seed}_{l0[0]}"), "x", cfg, "done", summary=summary)


def mcc_run(lr: float, l0: float, mcc: float) -> Run:
    """A finished synthetic-source run: MCC, no KL."""
    r = run("none", lr, None, 0, [l0], [1.0])
    r.summary["metrics"] = {k: v for k, v in r.summary["metrics"].items() if k != "kl"}  # type: ignore[index]
    r.summary["metrics"]["mcc"] = {"layer_0": mcc, "mean": mcc}  # type: ignore[index]
    r.config["source.kind"] = "synthetic"
    return r


def test_a_single_value_for_a_restricted_axis_is_noted_with_its_condition() -> None:
    """trainer.max_steps=2000 on a study preset reaches its doubling-check jobs only: the
    command says so; a comma list (an axis the user sweeps) and free keys get no note."""
    only = {"trainer.max_steps": [["coeff.scale=1", "seed=0"], ["coeff.scale=1", "seed=1"]]}
    notes = restricted_notes(["trainer.max_steps=2000", "seed=0", "optim.lr=1e-2"], only)
    assert notes == [
        "nsae: note: trainer.max_steps=2000 reaches only the jobs with coeff.scale=1 seed=0 "
        "or coeff.scale=1 seed=1 (the preset's hydra.sweeper.only.trainer.max_steps); the "
        "others keep the preset's value"
    ]
    assert restricted_notes(["trainer.max_steps=400,800"], only) == []
    assert restricted_notes(["seed=0"], only) == []


def test_on_a_synthetic_source_the_highest_mcc_at_matched_l0_wins() -> None:
    a = [mcc_run(1e-3, 10.0, 0.50), mcc_run(1e-3, 40.0, 0.70)]
    b = [mcc_run(1e-2, 10.0, 0.60), mcc_run(1e-2, 40.0, 0.66)]
    (cands,) = choose(a + b).values()
    ref = 20.0  # the geometric mean of 10, 40, 10, 40
    t = math.log(ref / 10) / math.log(4)  # halfway in log L0
    assert [c.value for c in cands] == pytest.approx([0.5 + 0.2 * t, 0.6 + 0.06 * t])
    assert [c.chosen for c in cands] == [False, True]  # 0.63 beats 0.60
    assert cands[0].objective.metric == "mcc"
    assert untuned(a + b)["optim.lr"] == 1e-2  # the synthetic study's lr before tuning
    assert untuned([run("none", 1e-3, None, 0, [1.0], [1.0])])["optim.lr"] == 3e-3


def at(l0: tuple[float, float], kl: tuple[float, float], target: float) -> float:
    """Closed form: log KL linear in log L0 through the two points, at `target`."""
    t = math.log(target / l0[0]) / math.log(l0[1] / l0[0])
    return math.exp(math.log(kl[0]) + t * math.log(kl[1] / kl[0]))


def test_rule_picks_lowest_kl_at_matched_l0_not_at_equal_coefficient() -> None:
    # A has the lower KL at both of its coefficients, but only because its L0 is higher:
    # at matched L0 B is better.
    a = [
        run("normalized_sae", 1e-3, 0.1, 0, [40.0], [0.10]),
        run("normalized_sae", 1e-3, 0.1, 0, [160.0], [0.05]),
    ]
    b = [
        run("normalized_sae", 3e-3, 0.1, 0, [10.0], [0.12]),
        run("normalized_sae", 3e-3, 0.1, 0, [80.0], [0.06]),
    ]
    assert is_tuning(a + b) and not is_tuning(a)
    (cands,) = choose(a + b).values()
    ref = (40 * 160 * 10 * 80) ** 0.25
    assert 40 <= ref <= 80  # brackets both
    kl_a, kl_b = at((40, 160), (0.10, 0.05), ref), at((10, 80), (0.12, 0.06), ref)
    assert kl_b < kl_a
    assert [c.value for c in cands] == pytest.approx([kl_a, kl_b], rel=1e-12)
    assert [c.chosen for c in cands] == [False, True]
    assert choices(choose(a + b)) == {"normalized_sae": {"none": {"lr": 3e-3, "noise_std": 0.1}}}


def test_rule_prefers_a_candidate_that_brackets_the_reference() -> None:
    # C's extrapolated KL is the lowest, but its L0s never reach the reference.
    b = [run("none", 3e-3, None, 0, [10.0], [0.12]), run("none", 3e-3, None, 0, [400.0], [0.03])]
    c = [run("none", 1e-2, None, 0, [500.0], [0.01]), run("none", 1e-2, None, 0, [900.0], [0.008])]
    (cands,) = choose(b + c).values()
    assert cands[1].value < cands[0].value and not cands[1].eligible and cands[0].eligible
    assert [x.chosen for x in cands] == [True, False]
    kl_c = at((500, 900), (0.01, 0.008), (10 * 400 * 500 * 900) ** 0.25)  # extrapolated
    assert caveats(cands[0], cands) == [f"lr 0.01 scores better ({kl_c:.4g}) but brackets 0/1"]
    assert caveats(cands[1], cands) == []  # nothing scores better


def test_rule_averages_layers_and_seeds_and_breaks_ties_by_order() -> None:
    two = [
        run("none", lr, None, seed, [10.0, 20.0], [0.2, 0.4])
        for lr in (1e-3, 3e-3)
        for seed in (0, 1)
    ] + [
        run("none", lr, None, seed, [40.0, 80.0], [0.1, 0.2])
        for lr in (1e-3, 3e-3)
        for seed in (0, 1)
    ]
    (cands,) = choose(two).values()
    ref = [20.0, 40.0]  # per layer: the geometric mean of 10 and 40, of 20 and 80
    expect = math.exp(
        (math.log(at((10, 40), (0.2, 0.1), ref[0])) + math.log(at((20, 80), (0.4, 0.2), ref[1])))
        / 2
    )
    assert [c.value for c in cands] == pytest.approx([expect, expect], rel=1e-12)
    assert [c.pairs for c in cands] == [4, 4]  # 2 seeds x 2 layers
    assert [c.chosen for c in cands] == [True, False]  # equal: the one that sorts first


@pytest.mark.slow
def test_a_real_tuning_sweep_trains_each_axis_where_it_applies_and_reports_the_choice(
    tmp_path: Path,
) -> None:
    """experiment=nsae_tuning shrunk (debug=study, one norm, two learning rates, two noises,
    one seed): the noise axis only for the Normalized SAE, the k axis for neither; the
    report is the tuning report and its choices are candidates that ran."""
    from tests.conftest import run_cli

    sweep = tmp_path / "tuning"
    over = ["experiment=nsae_tuning", "debug=study", "hydra/launcher=basic",
            "sae_type=none,normalized_sae", "normalization_method=none", "optim.lr=1e-3,1e-2",
            "sae.noise_std=0,0.3", "seed=0", f"hydra.sweep.dir={sweep}",
            f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    proc = run_cli("-m", *over, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(dirs) == 2 * 2 + 2 * 2 * 2  # lr x scale (+ noise for the Normalized SAE)
    assert sum("_relu_" in d and "noise=none" in d for d in dirs) == 4
    assert {d.rsplit("noise=", 1)[1] for d in dirs if "normalized_sae" in d} == {"0", "0.3"}
    assert not any("_k=" in d for d in dirs)
    proc = run_cli_report(sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((sweep / "report.json").read_text())
    assert "sections" not in rec  # the tuning report, not the study's
    tuned = rec["tuning"]
    assert len(tuned["candidates"]) == 2 + 4
    assert all(len(c["runs"]) == 2 for c in tuned["candidates"])  # two sparsities each
    assert tuned["choices"]["none"]["none"]["lr"] in (1e-3, 1e-2)
    nsae = tuned["choices"]["normalized_sae"]["none"]
    assert nsae["lr"] in (1e-3, 1e-2) and nsae["noise_std"] in (0, 0.3)
    assert sum(c["chosen"] for c in tuned["candidates"]) == 2
    assert "## Tuning" in (sweep / "report.md").read_text()


def run_cli_report(sweep: Path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "nsae.report", str(sweep), "--no-figures"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_an_extrapolated_mcc_stays_inside_its_range() -> None:
    # B's two L0s are close and far below the reference: a line through them reaches MCC
    # 1.67 at the reference, which no SAE can have; the score stops at 1.
    a = [mcc_run(1e-3, 20.0, 0.60), mcc_run(1e-3, 400.0, 0.70)]
    b = [mcc_run(1e-2, 10.0, 0.50), mcc_run(1e-2, 11.0, 0.60)]
    (cands,) = choose(a + b).values()
    assert cands[1].value == 1.0 and not cands[1].eligible
    assert [c.chosen for c in cands] == [True, False]
    assert caveats(cands[0], cands) == ["lr 0.01 scores better (1) but brackets 0/1"]


@pytest.mark.parametrize(
    ("report", "tuned_file", "presets", "variants"),
    [
        (
            "tuning",
            "kjv_gpt2",
            ("nsae_study", "nsae_baselines"),
            {
                "none": {"none", "input_norm", "input_norm_squared"},
                "normalized_sae": {"none", "input_norm", "input_norm_squared"},
                "jumprelu": {"none"},
                "topk": {"none"},
                "batchtopk": {"none"},
            },
        ),
        (
            "tuning_synthetic",
            "synthetic",
            ("nsae_synthetic_study",),
            {
                "none": {"none", "input_norm_squared"},
                "normalized_sae": {"none", "input_norm_squared"},
            },
        ),
    ],
)
def test_study_presets_default_to_the_published_choices(
    report: str, tuned_file: str, presets: tuple[str, ...], variants: dict[str, set[str]]
) -> None:
    """A published tuning report's choices are its conf/tuned/ file's, and the presets that
    read that file compose them for every condition."""
    from hydra import compose, initialize_config_dir

    from nsae.constants import CONF_DIR

    published = json.loads((RESULTS / report / "report.json").read_text())
    published = published["tuning"]["choices"]
    tuned = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"tuned/{tuned_file}.yaml"))
    assert isinstance(tuned, dict)
    assert {s: set(n) for s, n in published.items()} == variants
    assert {s: set(n) for s, n in tuned["lr"].items()} == variants
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for sae, by_norm in published.items():
            for norm, choice in by_norm.items():
                assert tuned["lr"][sae][norm] == pytest.approx(choice["lr"])
                if "noise_std" in choice:
                    assert tuned["noise_std"][sae][norm] == pytest.approx(choice["noise_std"])
                for preset in presets:
                    over = [f"experiment={preset}", f"sae_type={sae}"]
                    over += [f"normalization_method={norm}"]
                    cfg = compose("config", overrides=over)
                    assert cfg.optim.lr == pytest.approx(choice["lr"]), (preset, over)
                    if "noise_std" in choice:
                        assert cfg.sae.noise_std == pytest.approx(choice["noise_std"])


def test_the_tuning_figure_rings_the_choice_and_crosses_the_extrapolated() -> None:
    """The figure's data: one curve per noise over the learning rates; the chosen candidate
    once more as the one-point series CHOSEN, and the candidates that do not bracket the
    reference L0 as EXTRAPOLATED, at their learning rates and values."""
    from nsae.report.plot_layout import CHOSEN, EXTRAPOLATED
    from nsae.report.sections.tuning import cond_words, curves

    a = [mcc_run(1e-3, 10.0, 0.50), mcc_run(1e-3, 40.0, 0.70)]
    b = [mcc_run(1e-2, 10.0, 0.60), mcc_run(1e-2, 40.0, 0.66)]
    c = [mcc_run(3e-2, 50.0, 0.90), mcc_run(3e-2, 60.0, 0.91)]  # both above the reference
    chosen = choose(a + b + c)
    ((cond, cands),) = chosen.items()
    best = next(c for c in cands if c.chosen)
    (panel,) = curves(chosen, [cond]).values()
    assert list(panel) == ["no noise (standard SAE)", EXTRAPOLATED, CHOSEN]
    assert panel["no noise (standard SAE)"][0] == [1e-3, 1e-2, 3e-2]
    assert panel[CHOSEN] == ([best.setting[0]], [best.value])
    assert panel[EXTRAPOLATED] == ([3e-2], [cands[2].value])
    assert best.setting[0] != 3e-2 and not cands[2].eligible
    assert cond_words(cond) in curves(chosen, [cond])
