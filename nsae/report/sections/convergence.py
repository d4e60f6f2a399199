"""Convergence by doubling: some cells of a study also run with twice the steps (the same
warm-up, the decay stretched: experiment=nsae_study's `trainer.max_steps` axis). Per condition, the
change of each metric from doubling, over the seeds that have both runs; a condition whose
change reaches TOL in some metric is *not converged*, and every verdict resting on it says
so (ctx.unconverged)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nsae.constants import BOOKKEEPING
from nsae.report.document import Block, Table
from nsae.report.groups import Section, condition, label, order
from nsae.report.runs import Run
from nsae.report.sections import Ctx, natural
from nsae.report.stats import mean_ci

TOL = 0.03  # a relative change from doubling at or above this: not converged
STEPS = "trainer.max_steps"
METRICS = {"l0": "L0", "explained_variance": "explained variance", "kl": "KL", "mcc": "MCC"}


def split(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(the study's runs, its doubled runs): the runs whose step count is twice the most
    common one (S) of the finished runs, if they are fewer than half as many as those at S
    (a check on some cells; two step counts swept alike are two sections instead)."""
    counts = Counter(r.config.get(STEPS) for r in runs if r.status == "done")
    if not counts:
        return runs, []
    steps, n = counts.most_common(1)[0]
    if steps is None or not 0 < counts.get(2 * steps, 0) < n / 2:
        return runs, []
    doubled = [r for r in runs if r.config.get(STEPS) == 2 * steps]
    return [r for r in runs if r not in doubled], doubled


def identity(run: Run) -> tuple:
    """Everything that decides the run's results but its step count."""
    return tuple(
        sorted(
            (k, v)
            for k, v in run.config.items()
            if k != STEPS and not any(k == b or k.startswith(b + ".") for b in BOOKKEEPING)
        )
    )


def build(section: Section, doubled: list[Run], ctx: Ctx) -> list[Block]:
    """The doubling table of the section's conditions (nothing if the sweep has no doubled
    runs); sets ctx.unconverged for the verdicts."""
    if not doubled:
        return []
    twins = {identity(d): d for d in doubled if d.status == "done"}
    pairs: dict[Any, list[tuple[Run, Run]]] = {}
    for run in section.runs:
        twin = twins.get(identity(run))
        if run.status == "done" and twin is not None:
            pairs.setdefault(condition(run), []).append((run, twin))
    rows, record = [], {}
    present = {m: w for m, w in METRICS.items() if any(r.value(m) is not None for r in doubled)}
    steps = sorted({int(r.config[STEPS]) for ps in pairs.values() for p in ps for r in p})
    for cond in sorted(section.cells, key=order):
        if not any(c.done for c in section.cells[cond]):
            continue
        name = label(cond)
        found = pairs.get(cond, [])
        alpha_twin = None if found else _alpha_twin(section, cond)
        if alpha_twin is not None:
            # beta with k = 0: its jobs are its alpha cell's (skipped.json), and so is its answer
            why = ctx.unconverged.get(label(alpha_twin))
            if why is not None:
                ctx.unconverged[name] = why
            answer = f"{'**no**' if why else 'yes'}: its alpha cell's (k = 0)"
            rows.append([name, "", "", *["="] * len(present), answer])
            continue
        if not found:
            ctx.unconverged[name] = "no doubled run"
            rows.append([name, "n/a", "", *["n/a"] * len(present), "**not checked**"])
            continue
        changes, cells = {}, []
        for metric in present:
            base = _mean_of([a.value(metric) for a, _ in found])
            dbl = _mean_of([b.value(metric) for _, b in found])
            if base is None or dbl is None:
                cells.append("n/a")
                continue
            changes[metric] = (dbl - base) / max(abs(base), 1e-12)
            cells.append(f"{base:.4g} → {dbl:.4g} ({changes[metric]:+.1%})")
        worst = max(changes, key=lambda m: abs(changes[m]), default=None)
        ok = worst is not None and abs(changes[worst]) < TOL
        if not ok:
            ctx.unconverged[name] = (
                f"{present[worst]} moved {changes[worst]:+.1%} on doubling the steps"
                if worst
                else "no metric to compare"
            )
        alphas = sorted({a.alpha for a, _ in found if a.alpha is not None})
        seeds = sorted({a.seed for a, _ in found})
        rows.append(
            [
                name,
                ", ".join(f"{x:.3g}" for x in alphas),
                ", ".join(map(str, seeds)),
                *cells,
                "yes" if ok else "**no**",
            ]
        )
        record[name] = {
            "steps": steps,
            "seeds": seeds,
            "changes": changes,
            "converged": ok,
            "sources": sorted((r.rel for p in found for r in p), key=natural),
        }
    return [
        *ctx.part(
            "doubling",
            record,
            "Convergence by doubling",
            f"Each condition's doubled cell (in the studies: at its default coefficient, seeds "
            f"0 and 1), trained again with twice the steps ({' → '.join(map(str, steps))}; the "
            f"same warm-up, the decay stretched): per metric "
            f"the mean over the seeds that have both runs, and the relative change. A condition "
            f"is converged if every change is below {TOL:.0%}; the verdicts resting on one that "
            f"is not say so in their caveats.",
        ),
        Table(["condition", "alpha", "seeds", *present.values(), "converged"], rows),
    ]


def _alpha_twin(section: Section, cond: Any) -> Any | None:
    """The condition whose jobs a k = 0 beta condition's skipped jobs are (None unless every
    finished job of `cond` is skipped as equal to one)."""
    done = section.done(cond)
    if not done or any(r.status != "skipped" for r in done):
        return None
    by_rel = {r.rel: r for r in section.runs}
    twin = by_rel.get(done[0].same_as or "")
    return None if twin is None else condition(twin)


def _mean_of(vals: list[float | None]) -> float | None:
    stat = mean_ci(vals)
    return None if stat is None else stat.mean
