"""The tuning rule (experiment=nsae_tuning), fixed before its runs: per condition, the
candidate setting (learning rate, and the Normalized SAE's noise) with the lowest KL at
matched L0 on the validation split (on a synthetic source, which has no LM and so no KL:
the highest MCC with the true features at matched L0).

For a condition (SAE type, normalization method) and each layer, the *reference L0* is the
geometric mean of the L0s every finished run of the condition reaches on that layer. A
candidate's runs at one seed (one per sparsity) give points (log L0, log KL) per layer; its
log KL at the reference is interpolated linearly between them (`stats.interp_log`:
extrapolated when its L0s do not bracket the reference). Its score is the mean of those
values over layers and seeds; exp(score) is its KL at matched L0 (a geometric mean; MCC is
interpolated and averaged as it is). The choice is the best score among the candidates
that bracket the reference on every layer and seed; if none does, among those that bracket
it most often. Ties go to the setting
that sorts first. A choice at the smallest or largest value tried of some key is flagged
(the best value may lie beyond the grid), and so is a better score of a candidate that
does not bracket (its value is extrapolated; the best setting may lie among them)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from nsae.report.runs import Run, _num
from nsae.report.stats import interp_log

TUNED = ("optim.lr", "sae.noise_std")  # what a tuning sweep varies within a condition


@dataclass(frozen=True)
class Objective:
    metric: str
    name: str
    lower: bool  # lower is better
    log: bool  # interpolated and averaged as log values
    span: tuple[float, float] | None = None  # the metric's range: extrapolation stays inside


OBJECTIVES = (Objective("kl", "KL", True, True), Objective("mcc", "MCC", False, False, (0.0, 1.0)))
# the values the study presets used before tuning, per source kind: the report's comparison
UNTUNED = {
    "lm": {"optim.lr": 3e-3, "sae.noise_std": 0.1},
    "synthetic": {"optim.lr": 1e-2, "sae.noise_std": 0.1},
}
VALIDATION = "validation"  # the split settings are chosen on (conf/data/kjv.yaml)

Cond = tuple[str, str]  # sae type, normalization method
Setting = tuple[float | None, ...]  # the values of TUNED (None: the type has no such key)


@dataclass
class Candidate:
    cond: Cond
    setting: Setting
    objective: Objective = OBJECTIVES[0]
    runs: list[Run] = field(default_factory=list)
    score: float | None = None  # the mean (log) objective at the reference L0s; lower: better
    bracketed: int = 0  # (seed, layer) pairs whose L0s bracket the reference
    pairs: int = 0
    chosen: bool = False

    @property
    def value(self) -> float | None:
        """The objective at matched L0 (KL: a geometric mean)."""
        if self.score is None:
            return None
        if self.objective.log:
            return math.exp(self.score)
        return self.score if self.objective.lower else -self.score

    @property
    def eligible(self) -> bool:
        return self.pairs > 0 and self.bracketed == self.pairs

    def alive_min(self) -> float | None:
        vals = [r.value("frac_alive", i) for r in self.runs for i in r.layers()]
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    def l0_span(self) -> tuple[float, float] | None:
        vals = [v for r in self.runs if (v := r.value("l0")) is not None]
        return (min(vals), max(vals)) if vals else None

    def is_default(self, untuned: dict[str, float]) -> bool:
        return all(
            v is None or math.isclose(v, untuned[k])
            for k, v in zip(TUNED, self.setting, strict=True)
        )

    def words(self) -> str:
        return ", ".join(
            f"{k.split('.')[-1]} {v:g}"
            for k, v in zip(TUNED, self.setting, strict=True)
            if v is not None
        )


def setting(run: Run) -> Setting:
    return tuple(_num(run.config.get(k)) for k in TUNED)


def is_tuning(runs: list[Run]) -> bool:
    """Whether the runs are a tuning sweep: evaluated on the validation split (where
    settings are chosen; the studies report on eval), with some condition run at more than
    one setting of TUNED."""
    seen: dict[Cond, set[Setting]] = defaultdict(set)
    for r in runs:
        if r.status == "done" and r.config.get("data.eval_split") == VALIDATION:
            seen[(r.sae_type, r.norm)].add(setting(r))
    return any(len(s) > 1 for s in seen.values())


def untuned(runs: list[Run]) -> dict[str, float]:
    """UNTUNED for the runs' source kind (an LM's where unknown)."""
    kinds = {str(r.config.get("source.kind", "lm")) for r in runs if r.status == "done"}
    return UNTUNED["synthetic"] if kinds == {"synthetic"} else UNTUNED["lm"]


def objective(runs: list[Run]) -> Objective:
    """KL where the runs have it (an LM source), else MCC (a synthetic one)."""
    for obj in OBJECTIVES:
        if any(r.status == "done" and r.value(obj.metric) is not None for r in runs):
            return obj
    return OBJECTIVES[0]


def choose(runs: list[Run]) -> dict[Cond, list[Candidate]]:
    """Every condition's candidates, scored, the chosen one marked (see the module doc)."""
    obj = objective(runs)
    by_cond: dict[Cond, dict[Setting, Candidate]] = defaultdict(dict)
    for r in runs:
        if r.status != "done":
            continue
        cond, s = (r.sae_type, r.norm), setting(r)
        by_cond[cond].setdefault(s, Candidate(cond, s, obj)).runs.append(r)
    out = {}
    for cond, cands in by_cond.items():
        done = [r for c in cands.values() for r in c.runs]
        layers = sorted({i for r in done for i in r.layers()})
        ref = {i: _geomean([r.value("l0", i) for r in done]) for i in layers}
        ordered = [cands[s] for s in sorted(cands, key=_sort_key)]
        for cand in ordered:
            _score(cand, layers, ref)
        scored = [c for c in ordered if c.score is not None]
        if scored:
            most = max(c.bracketed - c.pairs for c in scored)
            pool = [c for c in scored if c.bracketed - c.pairs == most]
            min(pool, key=lambda c: c.score).chosen = True  # type: ignore[arg-type, return-value]
        out[cond] = ordered
    return out


def _score(cand: Candidate, layers: list[int], ref: dict[int, float | None]) -> None:
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for r in cand.runs:
        by_seed[r.seed].append(r)
    obj = cand.objective
    # the metric's range as scores (e.g. an extrapolated MCC stays in [0, 1])
    lo, hi = sorted(_badness(b, obj) for b in obj.span) if obj.span else (-math.inf, math.inf)  # type: ignore[type-var]
    values = []
    for seed_runs in by_seed.values():
        for i in layers:
            target = ref[i]
            l0 = [r.value("l0", i) for r in seed_runs]
            ys = [_badness(r.value(obj.metric, i), obj) for r in seed_runs]
            if target is None:
                return
            y, extrapolated = interp_log(l0, ys, target)  # type: ignore[arg-type]
            if y is None:
                return
            y = min(max(y, lo), hi)
            cand.pairs += 1
            cand.bracketed += not extrapolated
            values.append(y)
    cand.score = float(np.mean(values)) if values else None


def at_edge(cand: Candidate, cands: list[Candidate]) -> list[str]:
    """The keys of TUNED whose chosen value is the grid's smallest or largest (of >2 tried)."""
    out = []
    for i, key in enumerate(TUNED):
        tried = sorted({c.setting[i] for c in cands if c.setting[i] is not None})
        v = cand.setting[i]
        if len(tried) > 2 and v is not None and v in (tried[0], tried[-1]):
            end = "smallest" if v == tried[0] else "largest"
            out.append(f"{key.split('.')[-1]} {v:g} is the {end} tried")
    return out


def caveats(cand: Candidate, cands: list[Candidate]) -> list[str]:
    """What may make the choice not the best: `at_edge`, and every candidate scoring better
    without bracketing the reference everywhere (its value extrapolated)."""
    out = at_edge(cand, cands)
    if cand.score is None:
        return out
    for c in cands:
        if c is not cand and c.score is not None and c.score < cand.score:
            out.append(
                f"{c.words()} scores better ({c.value:.4g}) but brackets {c.bracketed}/{c.pairs}"
            )
    return out


def choices(chosen: dict[Cond, list[Candidate]]) -> dict[str, dict[str, dict[str, float]]]:
    """{sae type: {normalization method: {lr, noise_std}}}: conf/tuned/'s layout."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (sae, norm), cands in chosen.items():
        for c in cands:
            if c.chosen:
                out[sae][norm] = {
                    k.split(".")[-1]: v
                    for k, v in zip(TUNED, c.setting, strict=True)
                    if v is not None
                }
    return dict(out)


def _badness(v: float | None, obj: Objective) -> float | None:
    """The value as a score, lower better: log KL, or -MCC."""
    if v is None or (obj.log and v <= 0):
        return None
    y = math.log(v) if obj.log else v
    return y if obj.lower else -y


def _sort_key(s: Setting) -> tuple:
    return tuple(-1.0 if v is None else v for v in s)


def _geomean(vals: list[float | None]) -> float | None:
    pos = [v for v in vals if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(pos)))) if pos else None
