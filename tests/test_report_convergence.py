"""The doubling check (sections/convergence.py): twice-the-steps runs are paired with their
cells, never mixed into the study; each metric's change is computed by hand; a condition
that moves by 3% or more is flagged in the verdicts' caveats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nsae.report.__main__ import build
from nsae.report.judge import Judgement
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import unconverged
from tests.test_report_fixture import config, write_run, write_skipped

SCALES = (0.5, 1.0, 2.0)


def sweep(tmp_path: Path, kl_moves: dict[str, float]) -> dict:
    """Two conditions x 3 scales x seeds 0, 1 at 100 steps; the scale-1 cells again at 200
    steps, whose KL is the base KL x (1 + kl_moves[type]) and L0 1% lower."""
    for sae in ("none", "normalized_sae"):
        for scale in SCALES:
            for seed in (0, 1):
                base = {"l0": 20.0 / scale + seed, "kl": 0.1 * scale + 0.01 * seed,
                        "explained_variance": 0.8}  # fmt: skip
                write_run(
                    tmp_path, f"{sae}_{scale}_{seed}", config(sae, scale=scale, seed=seed), base
                )
                if scale == 1.0:
                    twice = {"l0": base["l0"] * 0.99, "kl": base["kl"] * (1 + kl_moves[sae]),
                             "explained_variance": 0.8}  # fmt: skip
                    cfg = config(sae, scale=scale, seed=seed, **{"trainer.max_steps": 200})
                    write_run(tmp_path, f"{sae}_{scale}_{seed}_x2", cfg, twice)
    build(tmp_path, figures=False)
    return json.loads((tmp_path / "report.json").read_text())


def test_doubled_runs_are_checked_not_studied(tmp_path: Path) -> None:
    rec = sweep(tmp_path, {"none": 0.01, "normalized_sae": -0.05})
    (sec,) = rec["sections"]  # one section: the doubled runs are no second one
    assert not any(r.endswith("_x2") for r in sec["runs"])
    assert not any(s.endswith("_x2") for c in sec["cells"] for s in c["sources"])
    doubling = sec["doubling"]
    std, nsae = (
        doubling["standard SAE, plain loss, alpha"],
        doubling["Normalized SAE, plain loss, alpha"],
    )
    # by hand: mean over seeds 0, 1 of the base and the doubled values
    base_kl = (0.1 + 0.11) / 2
    assert std["changes"]["kl"] == pytest.approx(0.01)
    assert nsae["changes"]["kl"] == pytest.approx((base_kl * 0.95 - base_kl) / base_kl)
    assert std["changes"]["l0"] == pytest.approx(-0.01)
    assert std["changes"]["explained_variance"] == pytest.approx(0.0)
    assert (std["converged"], nsae["converged"]) == (True, False)
    assert std["steps"] == [100, 200] and std["seeds"] == [0, 1]
    assert sorted(std["sources"]) == sorted(
        ["none_1.0_0", "none_1.0_1", "none_1.0_0_x2", "none_1.0_1_x2"]
    )
    md = (tmp_path / "report.md").read_text()
    assert "Convergence by doubling" in md and "0.105 → 0.09975 (-5.0%)" in md


def test_unconverged_condition_is_a_caveat_of_every_verdict_on_it() -> None:
    ctx = Ctx(Path("."), Path("."))
    ctx.unconverged = {"A": "KL moved -5.0% on doubling the steps"}
    on_a = Judgement("s", "supported", [{"pair": "A vs B"}, {"pair": "C vs A"}])
    assert unconverged(on_a, ctx) == ["A not converged (KL moved -5.0% on doubling the steps)"]
    assert unconverged(Judgement("s", "supported", [{"pair": "B vs C"}]), ctx) == []


def test_a_condition_without_a_doubled_run_is_not_checked(tmp_path: Path) -> None:
    rec = sweep(tmp_path, {"none": 0.0, "normalized_sae": 0.0})
    for seed in (0, 1):  # a third condition, never doubled
        for scale in SCALES:
            cfg = config("none", "input_norm", scale=scale, seed=seed)
            write_run(tmp_path, f"in_{scale}_{seed}", cfg, {"l0": 10.0, "kl": 0.2})
    build(tmp_path, figures=False)
    md = (tmp_path / "report.md").read_text()
    assert rec["sections"][0]["doubling"]["standard SAE, plain loss, alpha"]["converged"]
    assert (
        "| standard SAE, loss / \\|\\|x\\|\\|, alpha | n/a |  | n/a | n/a | n/a | **not checked** |"
        in md
    )


def test_a_k0_beta_condition_takes_its_alpha_cells_answer(tmp_path: Path) -> None:
    """beta with k = 0 is never trained (skipped.json names its alpha job): its doubling row
    says so and carries its alpha condition's convergence, here not converged (KL -5%)."""
    for scale in SCALES:
        for seed in (0, 1):
            base = {"l0": 20.0 / scale + seed, "kl": 0.1 * scale, "explained_variance": 0.8}
            alpha = f"in_{scale}_{seed}"
            write_run(tmp_path, alpha, config("none", "input_norm", scale=scale, seed=seed), base)
            beta = config("none", "input_norm", coeff="beta", k=0.0, scale=scale, seed=seed)
            write_skipped(tmp_path, f"in_beta_{scale}_{seed}", beta, alpha)
            if scale == 1.0:
                twice = {**base, "kl": base["kl"] * 0.95}
                cfg = config("none", "input_norm", scale=scale, seed=seed,
                             **{"trainer.max_steps": 200})  # fmt: skip
                write_run(tmp_path, f"{alpha}_x2", cfg, twice)
                beta_x2 = {**beta, "trainer": {**beta["trainer"], "max_steps": 200}}
                write_skipped(tmp_path, f"in_beta_{scale}_{seed}_x2", beta_x2, f"{alpha}_x2")
    build(tmp_path, figures=False)
    md = (tmp_path / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| standard SAE, loss / ")]
    alpha_row, beta_row = (r for r in rows if "-5.0%" in r or "alpha cell" in r)
    assert "alpha |" in alpha_row and alpha_row.endswith("| **no** |")
    assert "beta (k=0)" in beta_row and beta_row.endswith("| **no**: its alpha cell's (k = 0) |")
