"""The report's pure functions against hand computations: seed CIs, interpolation in log L0,
L0 targets, convergence, verdict rules, the premise rule and dictionary statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from nsae.report.sections.dictionary import mean_cos, nn_max_cos
from nsae.report.sections.premise import high_norm
from nsae.report.stats import Stat, converged, diff_ci, interp_log, mean_ci

T975_DF1 = 12.706204736174698  # Student t, 97.5% quantile, 1 degree of freedom (tables)


def test_mean_ci_two_seeds_by_hand() -> None:
    s = mean_ci([0.5, 0.7])
    sd = math.sqrt(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 1)
    assert s.n == 2 and s.mean == pytest.approx(0.6)
    assert s.half == pytest.approx(T975_DF1 * sd / math.sqrt(2))
    assert (s.lo, s.hi) == pytest.approx((0.6 - 1.2706204736, 0.6 + 1.2706204736))


def test_mean_ci_one_seed_has_no_ci_and_ignores_missing() -> None:
    assert mean_ci([0.3, None, float("nan")]) == Stat(0.3, None, 1)
    assert mean_ci([None]) is None
    assert "n=1" in Stat(0.3, None, 1).text() and "±" not in Stat(0.3, None, 1).text()


def test_diff_ci_welch_by_hand() -> None:
    d = diff_ci([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    # var_a = 1, var_b = 1/3, se^2 = 1/3 + 1/9 = 4/9, nu = (4/9)^2 / ((1/9)^2/2 + (1/27)^2/2)
    nu = (4 / 9) ** 2 / ((1 / 3) ** 2 / 2 + (1 / 9) ** 2 / 2)
    assert nu == pytest.approx(3.2)
    assert d.mean == pytest.approx(5 / 3)
    assert d.half == pytest.approx(st.t.ppf(0.975, 3.2) * 2 / 3)
    assert diff_ci([1.0], [0.0, 1.0]).half is None


def test_interp_log_by_hand_and_extrapolation_flag() -> None:
    l0, y = [40.0, 10.0], [0.9, 0.8]  # unsorted on purpose
    assert interp_log(l0, y, 20.0) == (pytest.approx(0.85), False)  # log 20 halfway 10..40
    assert interp_log(l0, y, 10.0) == (pytest.approx(0.8), False)
    assert interp_log(l0, y, 80.0) == (pytest.approx(0.95), True)
    assert interp_log(l0, y, 5.0) == (pytest.approx(0.75), True)
    assert interp_log([10.0], [1.0], 10.0) == (1.0, False)
    assert interp_log([10.0], [1.0], 20.0) == (None, True)
    assert interp_log([0.0, 10.0], [0.1, 1.0], 10.0) == (1.0, False)  # L0 0 has no log


def test_convergence_over_last_fifth() -> None:
    steps = [0, 20, 40, 60, 80, 90, 100]
    ok, move = converged(steps, [50, 30, 20, 12, 10.0, 10.2, 10.3])
    assert ok is True and move == pytest.approx(0.3 / 10.3)
    ok, move = converged(steps, [50, 30, 20, 12, 9.0, 9.5, 10.0])
    assert ok is False and move == pytest.approx(0.1)
    assert converged([0, 50, 100], [3.0, 2.0, 1.0]) == (None, None)  # one point in window


def test_high_norm_rule() -> None:
    assert high_norm(25.0, 10.0, 12.0, 10.0) is True  # q99/q50 = 2.5
    assert high_norm(15.0, 10.0, 80.0, 10.0) is True  # position 0 / rest = 8
    assert high_norm(15.0, 10.0, 12.0, 10.0) is False
    assert high_norm(None, None, None, None) is None


def test_nearest_neighbour_cosine_exact_in_chunks() -> None:
    W_dec_MD = np.random.default_rng(0).normal(size=(10, 5))
    u = W_dec_MD / np.linalg.norm(W_dec_MD, axis=1, keepdims=True)
    brute = [max(abs(u[i] @ u[j]) for j in range(10) if j != i) for i in range(10)]
    assert nn_max_cos(W_dec_MD, chunk=3) == pytest.approx(brute)
    b_D = np.ones(5)
    assert mean_cos(W_dec_MD, b_D) == pytest.approx(u @ b_D / math.sqrt(5))
