"""Every verdict rule on constructed cases that it must pass and must fail: a clearly better
method, a worse one, an equal one, an absence claim at few and many seeds, a seed that misses
an L0 target, and a non-monotone curve (dominated points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nsae.report import verdicts as v
from nsae.report.groups import sections
from nsae.report.matched import at, seed_curve, shared_targets
from nsae.report.runs import load_sweep
from nsae.report.stats import Stat, contrast_ci, diff_ci, frontier, log_targets, shared_range
from tests.test_report_fixture import config, write_run


def _seeds(mean: float, sd: float, n: int) -> list[float]:
    """n values with exactly this mean and sample standard deviation."""
    z = np.random.default_rng(n).normal(size=n)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + sd * z)


# parity: non-inferiority, with "better" its own outcome ----------------------------------


def test_a_clearly_better_method_is_better_never_contradicted() -> None:
    # layer 0 of the embedded study: KL 0.055 (Normalized SAE) against 0.131 (standard)
    d = diff_ci(_seeds(0.055, 0.004, 3), _seeds(0.131, 0.004, 3))
    assert v.non_inferior(d, 0.131, higher_is_better=False) == v.BETTER
    # explained variance 0.93 against 0.87: higher is better
    d = diff_ci(_seeds(0.93, 0.005, 3), _seeds(0.87, 0.005, 3))
    assert v.non_inferior(d, 0.87, higher_is_better=True) == v.BETTER
    # the old two-sided rule called both of these contradicted; combine keeps them better
    assert v.combine([v.BETTER, v.BETTER]) == v.BETTER
    assert v.combine([v.BETTER, v.SUPPORTED, v.INCONCLUSIVE]) == v.SUPPORTED


def test_a_worse_method_is_contradicted_an_equal_one_supported() -> None:
    worse = diff_ci(_seeds(0.80, 0.004, 3), _seeds(0.90, 0.004, 3))
    assert v.non_inferior(worse, 0.90) == v.CONTRADICTED
    assert v.non_inferior(diff_ci(_seeds(0.2, 0.004, 3), _seeds(0.1, 0.004, 3)), 0.1, False) == (
        v.CONTRADICTED
    )  # KL twice the reference's
    equal = diff_ci(_seeds(0.900, 0.001, 5), _seeds(0.900, 0.001, 5))
    assert v.non_inferior(equal, 0.90) == v.SUPPORTED  # CI inside the 1% margin, around 0
    # within the margin on the worse side: still non-inferior
    assert v.non_inferior(Stat(-0.004, 0.003, 3), 0.9) == v.SUPPORTED  # CI > -0.009
    assert v.non_inferior(Stat(-0.01, 0.005, 3), 0.9) == v.INCONCLUSIVE  # straddles -0.009
    assert v.non_inferior(Stat(0.5, None, 1), 0.9) == v.INCONCLUSIVE  # one seed: no CI


def test_few_seeds_are_inconclusive_many_decide() -> None:
    for n, expected in ((2, v.INCONCLUSIVE), (10, v.BETTER)):
        d = diff_ci(_seeds(0.92, 0.02, n), _seeds(0.90, 0.02, n))
        assert v.non_inferior(d, 0.9) == expected, n


# absence: equivalence -------------------------------------------------------------------


def test_an_absence_claim_does_not_get_easier_with_fewer_seeds() -> None:
    """No effect (true 0, noise 0.1) against a baseline effect of 1 (margin +-0.2): two
    seeds cannot show the absence, ten can. The old rule (CI includes 0) said supported for
    both, and more readily for two."""
    baseline = Stat(1.0, 0.1, 3)
    two = contrast_ci([_seeds(0.0, 0.1, 2)], [1.0])
    ten = contrast_ci([_seeds(0.0, 0.1, 10)], [1.0])
    assert two is not None and two.lo is not None and two.lo < 0 < two.hi  # includes 0
    assert v.removed(baseline, two) == v.INCONCLUSIVE
    assert v.removed(baseline, ten) == v.SUPPORTED
    # a real remaining effect (half the baseline's) is contradicted at ten seeds
    assert v.removed(baseline, contrast_ci([_seeds(0.5, 0.1, 10)], [1.0])) == v.CONTRADICTED
    # nothing to remove: the baseline shows no effect
    assert v.removed(Stat(-0.5, 0.1, 3), ten) == v.CONTRADICTED
    assert v.equivalent(Stat(0.0, 0.05, 3), 0.0) == v.INCONCLUSIVE  # no margin: no claim
    # a baseline effect that is not shown (CI across 0) leaves nothing to remove: never
    # contradicted by the method's own effect
    assert v.removed(Stat(0.05, 0.5, 3), Stat(0.3, 0.05, 3)) == v.INCONCLUSIVE


def test_reduced_needs_the_baseline_effect_it_reduces() -> None:
    """|E_x| - |E_y| below 0 supports "reduced" only where the baseline's effect E_y is shown
    above 0: an effect the premise pushes the other way is no bias to reduce."""
    smaller, larger = Stat(-1.0, 0.3, 5), Stat(1.0, 0.3, 5)
    assert v.reduced(Stat(2.0, 0.5, 5), smaller) == v.SUPPORTED
    assert v.reduced(Stat(2.0, 0.5, 5), larger) == v.CONTRADICTED
    assert v.reduced(Stat(2.0, 0.5, 5), Stat(0.0, 0.3, 5)) == v.INCONCLUSIVE  # equal
    assert v.reduced(Stat(-2.0, 0.5, 5), smaller) == v.CONTRADICTED  # no bias: none reduced
    assert v.reduced(Stat(0.1, 0.5, 5), smaller) == v.INCONCLUSIVE  # bias not shown
    assert v.reduced(Stat(2.0, None, 1), smaller) == v.INCONCLUSIVE  # one seed: no CI


def test_equivalence_bands() -> None:
    assert v.equivalent(Stat(0.05, 0.1, 5), 0.2) == v.SUPPORTED
    assert v.equivalent(Stat(0.15, 0.1, 5), 0.2) == v.INCONCLUSIVE
    assert v.equivalent(Stat(0.5, 0.1, 5), 0.2) == v.CONTRADICTED
    assert v.equivalent(Stat(-0.5, 0.1, 5), 0.2) == v.CONTRADICTED


def test_sign_agree_and_combine() -> None:
    S, C, I = v.SUPPORTED, v.CONTRADICTED, v.INCONCLUSIVE  # noqa: E741
    assert v.sign(Stat(-0.15, 0.03, 2), -1) == S and v.sign(Stat(0.15, 0.03, 2), -1) == C
    assert v.sign(Stat(-0.01, 0.03, 2), -1) == I and v.sign(Stat(-0.1, None, 1), -1) == I
    assert v.agree(S, S) == S and v.agree(S, C) == I
    assert v.combine([S, S, I]) == S and v.combine([S, I, I]) == I
    assert v.combine([C, C, I]) == C and v.combine([S, S, C]) == I and v.combine([]) == I
    assert v.combine([S, S], strict=True) == S and v.combine([S, I], strict=True) == I
    assert v.combine([S, C], strict=True) == C


def test_difference_in_differences_ci_is_welch_over_four_groups() -> None:
    groups = [_seeds(m, 0.1, 4) for m in (3.0, 1.0, 5.0, 1.0)]
    did = contrast_ci(groups, [1, -1, -1, 1])
    assert did is not None and did.mean == pytest.approx((3 - 1) - (5 - 1))
    se = np.sqrt(4 * 0.01 / 4)
    nu = (4 * 0.01 / 4) ** 2 / (4 * (0.01 / 4) ** 2 / 3)  # Welch-Satterthwaite
    from scipy import stats

    assert did.half == pytest.approx(stats.t.ppf(0.975, nu) * se)
    assert contrast_ci([[1.0, 2.0], [3.0, 4.0]], [1, -1]) == diff_ci([1.0, 2.0], [3.0, 4.0])


# matched L0: shared range, frontiers, no extrapolation -----------------------------------


def test_frontier_drops_dominated_points_of_a_non_monotone_curve() -> None:
    # synthetic_flat, Normalized SAE: alpha 2 gives L0 11.35, alpha 4 gives 12.83 (sparser
    # is the larger alpha's L0 here in reverse); the point at higher L0 and lower quality is
    # dominated and must not be interpolated through
    l0 = [20.0, 11.35, 12.83, 30.0]
    ev = [0.85, 0.80, 0.78, 0.90]
    xs, ys = frontier(l0, ev, higher_is_better=True)
    assert xs == [11.35, 20.0, 30.0] and ys == [0.80, 0.85, 0.90]
    xs, ys = frontier([10.0, 12.0, 15.0], [0.10, 0.12, 0.08], higher_is_better=False)  # KL
    assert xs == [10.0, 15.0] and ys == [0.10, 0.08]


def test_targets_lie_inside_every_seeds_range() -> None:
    assert shared_range([(5.0, 80.0), (10.0, 40.0), (8.0, 50.0)]) == (10.0, 40.0)
    assert shared_range([(5.0, 8.0), (10.0, 40.0)]) is None
    assert shared_range([(5.0, 8.0), None]) is None
    t = log_targets((10.0, 40.0))
    assert len(t) == 5 and t[0] == pytest.approx(10.0) and t[-1] == pytest.approx(40.0)
    assert np.allclose(np.diff(np.log(t)), np.log(4) / 4)


def _sweep(tmp_path: Path, l0_by_seed: dict[int, list[float]], ev: list[float]) -> list:
    for seed, l0s in l0_by_seed.items():
        for scale, l0, e in zip((0.5, 1.0, 2.0, 4.0), l0s, ev, strict=True):
            cfg = config(scale=scale, seed=seed)
            write_run(tmp_path, f"{seed}_{scale}", cfg, {"l0": l0, "explained_variance": e})
    return sections(load_sweep(tmp_path))


def test_a_seed_that_misses_a_target_narrows_the_range_and_never_extrapolates(
    tmp_path: Path,
) -> None:
    # seed 1 reaches only L0 10..40 of seed 0's 5..80
    sec = _sweep(tmp_path, {0: [80, 40, 10, 5], 1: [40, 30, 20, 10]}, [0.95, 0.9, 0.8, 0.7])[0]
    cells = next(iter(sec.cells.values()))
    tgts = shared_targets([cells], "explained_variance", 0)
    assert tgts[0] == pytest.approx(10.0) and tgts[-1] == pytest.approx(40.0)
    for t in tgts:
        m = at(cells, "explained_variance", 0, t)
        assert not m.extrapolated and None not in m.seeds and m.stat is not None
    # L0 5 lies outside seed 1's curve: no number at all
    m = at(cells, "explained_variance", 0, 5.0)
    assert m.extrapolated and m.stat is None and m.value is None
    assert seed_curve(cells, "explained_variance", 0, 1)[0] == [10.0, 20.0, 30.0, 40.0]


def test_a_table_of_two_metrics_names_each_rows_metric() -> None:
    from nsae.report.sections.claim_blocks import table

    rows = [
        {"pair": "a vs b", "layer": 0, "metric": m, "target": 10.0, "x": Stat(1.0, 0.1, 3),
         "y": Stat(0.5, 0.1, 3), "diff": Stat(0.5, 0.1, 3), "verdict": v.BETTER}
        for m in ("reconstruction_score", "kl")
    ]  # fmt: skip
    t = table(rows)
    assert t.header[2] == "metric" and [r[2] for r in t.rows] == ["reconstruction_score", "kl"]
    assert "x" in t.header and "x: kl" not in t.header
    one = table(rows[:1])
    assert "metric" not in one.header and "x: reconstruction_score" in one.header
