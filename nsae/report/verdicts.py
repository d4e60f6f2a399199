"""Verdict rules: pure functions from seed statistics (a `Stat`: mean and 95% CI over seeds)
to an outcome. One rule set for every section of the report:

- `sign`: a directional claim ("x is lower than y"): supported if the difference's CI lies
  wholly on the claimed side of 0, contradicted if wholly on the other side.
- `non_inferior`: a parity claim ("x is on par with y") as a non-inferiority test with a
  margin (PAR_MARGIN of the reference's magnitude): contradicted if the CI lies wholly
  beyond the margin on the worse side; *better* (its own outcome, never contradicted) if the
  CI lies wholly on the better side of 0; supported if it lies above the margin; else
  inconclusive.
- `equivalent`: an absence claim ("x removes the effect", "does not rise") as an
  equivalence test: supported only if the CI lies inside +-margin, contradicted if it lies
  wholly outside, else inconclusive. So fewer seeds (a wider CI) can never make an absence
  easier to support.
- `within`: a value claimed inside [lo, hi] (CI inside: supported; wholly outside:
  contradicted).

A missing CI (n = 1 seed on a side) is always inconclusive. `combine` turns a claim's
comparisons into its verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

from nsae.report.stats import Stat

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
BETTER = "better"  # a parity claim whose condition is clearly better than its reference
L1_L0_TOLERANCE = 0.1  # claim 4: l1/l0 within 1 +- 0.1
PAR_MARGIN = 0.01  # parity claims: non-inferior = the CI above -1% of the reference
ABSENCE_MARGIN = 0.2  # absence claims: the effect within +-20% of the baseline's effect


def _no_ci(d: Stat | None) -> bool:
    return d is None or d.half is None


def sign(d: Stat | None, expected: int) -> str:
    """A difference expected to be > 0 (expected=+1) or < 0 (expected=-1): supported if its
    CI excludes 0 on that side, contradicted if it excludes 0 on the other side."""
    if _no_ci(d):
        return INCONCLUSIVE
    assert d is not None and d.lo is not None and d.hi is not None
    if d.lo > 0 or d.hi < 0:
        return SUPPORTED if (d.mean > 0) == (expected > 0) else CONTRADICTED
    return INCONCLUSIVE


def non_inferior(
    d: Stat | None, reference: float, higher_is_better: bool = True, margin: float = PAR_MARGIN
) -> str:
    """x - y = d for a metric where higher (or lower) is better, claimed on par: better if
    the CI is wholly on the better side of 0; supported if it lies above -margin*|reference|
    on the worse side; contradicted if it lies wholly beyond that; else inconclusive."""
    if _no_ci(d):
        return INCONCLUSIVE
    assert d is not None and d.lo is not None and d.hi is not None
    s = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((s * d.lo, s * d.hi))  # the CI of the improvement
    band = margin * abs(reference)
    if lo > 0:
        return BETTER
    if lo > -band:
        return SUPPORTED
    if hi < -band:
        return CONTRADICTED
    return INCONCLUSIVE


def equivalent(d: Stat | None, margin: float) -> str:
    """An effect claimed absent: supported if its CI lies inside [-margin, margin],
    contradicted if it lies wholly outside that band, else inconclusive."""
    if _no_ci(d) or margin <= 0:
        return INCONCLUSIVE
    assert d is not None and d.lo is not None and d.hi is not None
    if -margin <= d.lo and d.hi <= margin:
        return SUPPORTED
    if d.lo > margin or d.hi < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def within(d: Stat | None, lo: float, hi: float) -> str:
    """A value claimed in [lo, hi]: supported if its CI lies inside, contradicted if its CI
    lies wholly outside, inconclusive if it straddles a bound."""
    if _no_ci(d):
        return INCONCLUSIVE
    assert d is not None and d.lo is not None and d.hi is not None
    if lo <= d.lo and d.hi <= hi:
        return SUPPORTED
    if d.hi < lo or d.lo > hi:
        return CONTRADICTED
    return INCONCLUSIVE


def removed(baseline: Stat | None, effect: Stat | None, margin: float = ABSENCE_MARGIN) -> str:
    """An effect that the baseline shows and a method removes: the baseline's effect must be
    above 0 (`sign`; otherwise that verdict: there is nothing shown to remove), then the
    method's effect is judged equivalent to 0 within +-margin times the baseline's effect
    (`equivalent`)."""
    shown = sign(baseline, +1)
    if shown != SUPPORTED:
        return shown
    assert baseline is not None
    return equivalent(effect, margin * abs(baseline.mean))


def reduced(baseline: Stat | None, did: Stat | None) -> str:
    """An effect that the baseline shows and a method makes smaller: the baseline's effect
    must be above 0 (`sign`; otherwise that verdict: an effect pushed the other way is no
    bias to reduce), then |effect| - |baseline| = did must be below 0 (`sign`)."""
    shown = sign(baseline, +1)
    return shown if shown != SUPPORTED else sign(did, -1)


def agree(a: str, b: str) -> str:
    """One comparison judged by two measures: their verdict where they agree, else
    inconclusive."""
    return a if a == b else INCONCLUSIVE


def combine(parts: Iterable[str], strict: bool = False) -> str:
    """Many comparisons into one verdict (`better` counts as supporting).
    strict: supported only if all are, contradicted if any is.
    Otherwise: contradicted if a majority is contradicted and none supports, supported if a
    majority supports and none is contradicted, else inconclusive. Either way the verdict
    is `better` when every comparison is."""
    parts = list(parts)
    if not parts:
        return INCONCLUSIVE
    n_better = parts.count(BETTER)
    n_sup, n_con = parts.count(SUPPORTED) + n_better, parts.count(CONTRADICTED)
    if n_better == len(parts):
        return BETTER
    if strict:
        if n_con:
            return CONTRADICTED
        return SUPPORTED if n_sup == len(parts) else INCONCLUSIVE
    if n_con == 0 and n_sup * 2 > len(parts):
        return SUPPORTED
    if n_sup == 0 and n_con * 2 > len(parts):
        return CONTRADICTED
    return INCONCLUSIVE
