"""Verdict rules: pure functions from seed statistics to supported / contradicted /
inconclusive. A CI that is missing (n = 1 seed on either side) is always inconclusive."""

from __future__ import annotations

from collections.abc import Iterable

from nsae.report.stats import Stat

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
L1_L0_TOLERANCE = 0.1  # claim 4: l1/l0 within 1 +- 0.1
PAR_TOLERANCE = 0.01  # claim 5: on par = the difference's CI within +-1% of the score


def sign(d: Stat | None, expected: int) -> str:
    """A difference expected to be > 0 (expected=+1) or < 0 (expected=-1): supported if its
    CI excludes 0 on that side, contradicted if it excludes 0 on the other side."""
    if d is None or d.half is None:
        return INCONCLUSIVE
    if d.lo > 0 or d.hi < 0:  # type: ignore[operator]
        return SUPPORTED if (d.mean > 0) == (expected > 0) else CONTRADICTED
    return INCONCLUSIVE


def no_effect(d: Stat | None) -> str:
    """An effect claimed absent: supported if the CI includes 0, contradicted if not."""
    if d is None or d.half is None:
        return INCONCLUSIVE
    return SUPPORTED if d.lo <= 0 <= d.hi else CONTRADICTED  # type: ignore[operator]


def within(d: Stat | None, lo: float, hi: float) -> str:
    """A value claimed in [lo, hi]: supported if its CI lies inside, contradicted if its CI
    lies wholly outside, inconclusive if it straddles a bound."""
    if d is None or d.half is None:
        return INCONCLUSIVE
    if lo <= d.lo and d.hi <= hi:  # type: ignore[operator]
        return SUPPORTED
    if d.hi < lo or d.lo > hi:  # type: ignore[operator]
        return CONTRADICTED
    return INCONCLUSIVE


def on_par(d: Stat | None, reference: float, tol: float = PAR_TOLERANCE) -> str:
    """Two conditions on par: the difference's CI within +-tol*|reference|."""
    band = tol * abs(reference)
    return within(d, -band, band)


def slope_removed(standard: Stat | None, normalised: list[Stat | None]) -> str:
    """Claim 2 on one layer: the standard loss's l0_norm_slope has a CI above 0 and every
    normalised loss's slope CI includes 0."""
    parts = [sign(standard, +1), *(no_effect(s) for s in normalised)]
    if not normalised:
        parts.append(INCONCLUSIVE)
    return combine(parts, strict=True)


def counted(rows: Iterable[dict]) -> list[str]:
    """The verdicts of the comparisons made within the data: a comparison at an L0 that a
    curve (or one seed's) does not reach is listed in the report but not counted."""
    return [r["verdict"] for r in rows if not r.get("extrapolated")]


def combine(parts: Iterable[str], strict: bool = False) -> str:
    """Many comparisons into one verdict. strict: supported only if all are, contradicted
    if any is. Otherwise: contradicted if a majority is contradicted and none is supported,
    supported if a majority is supported and none is contradicted, else inconclusive."""
    parts = list(parts)
    if not parts:
        return INCONCLUSIVE
    n_sup, n_con = parts.count(SUPPORTED), parts.count(CONTRADICTED)
    if strict:
        if n_con:
            return CONTRADICTED
        return SUPPORTED if n_sup == len(parts) else INCONCLUSIVE
    if n_con == 0 and n_sup * 2 > len(parts):
        return SUPPORTED
    if n_sup == 0 and n_con * 2 > len(parts):
        return CONTRADICTED
    return INCONCLUSIVE
