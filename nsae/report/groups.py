"""Grouping runs so that different settings never mix.

A run's *setting* is its whole resolved config minus the grid axes (sae.type and the
type's own sae.* hyper-parameters, loss.normalization_method, coeff.*, the condition axes
CONDITION_AXES and the sweep axes CELL_AXES), the seed and run bookkeeping (BOOKKEEPING).
Runs with different settings go to different sections, titled by the keys that differ.
Within a section the hyper-parameters that may be tuned per condition (PER_CONDITION: the
learning rate; conf/tuned/) and the type's own other hyper-parameters (e.g. sae.noise_std
of normalized_sae) must agree for each SAE type and normalization method: a section takes
one variant of each (e.g. the study's tuned learning rate per condition).

A condition is (arm, normalization_method, coeff mode, beta exponent k). The arm is the SAE
type plus "+<value>" for each condition axis off its default, e.g. "none+decoder_norm"
(sae.l1_weighting=decoder_norm) or "none+expected_norm" (data.normalize_activations=
expected_norm), so the baselines sit in one section beside the study's conditions.
Within a section, a `Cell` is one condition at one point of its sweep: one alpha, and for
types whose sparsity is set by sae.k (topk, ...) one k. A cell holds its seeds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from nsae.constants import BOOKKEEPING, SAE_COMMON_KEYS
from nsae.report.runs import COEFFS, NORMS, SAE_TYPES, Run
from nsae.report.stats import Stat, mean_ci

AXES = ("sae.type", "loss.normalization_method", "seed")
AXIS_PREFIXES = ("coeff.",)
CONDITION_AXES = {"sae.l1_weighting": "none", "data.normalize_activations": "none"}  # default
CELL_AXES = ("sae.k",)  # the sweep axis of types without a sparsity coefficient
PER_CONDITION = ("optim.lr",)  # may differ between conditions of one section (tuned)

Condition = tuple[str, str, str, float | None]  # arm, norm, coeff mode, beta exponent k


SAE_WORDS = {
    "none": "standard SAE",
    "normalized_sae": "Normalized SAE",
    "topk": "TopK SAE",
    "batchtopk": "BatchTopK SAE",
    "jumprelu": "JumpReLU SAE",
    "gated": "Gated SAE",
    "matryoshka": "Matryoshka SAE",
}
TAG_WORDS = {"decoder_norm": "decoder-norm L1", "expected_norm": "expected-norm rescaling"}
NORM_WORDS = {
    "none": "plain loss",
    "input_norm": "loss / ||x||",
    "input_norm_squared": "loss / ||x||²",
}


def label(cond: Condition) -> str:
    """The condition in words, e.g. "standard SAE, plain loss, alpha" or
    "Normalized SAE, loss / ||x||, beta (k=1)"; an arm's baselines follow its type
    ("standard SAE + decoder-norm L1, ...")."""
    sae, norm, coeff, k = cond
    base, *tags = sae.split("+")
    arm = " + ".join([SAE_WORDS.get(base, base), *(TAG_WORDS.get(t, t) for t in tags)])
    mode = coeff + ("" if k is None else f" (k={k:g})")
    return f"{arm}, {NORM_WORDS.get(norm, norm)}, {mode}"


def order(cond: Condition) -> tuple:
    """The study's conditions in grid order, each arm's baselines ("+...") after its type."""
    base, *tags = cond[0].split("+")
    axes = zip((NORMS, COEFFS), cond[1:3], strict=True)
    idx = [a.index(v) if v in a else len(a) for a, v in axes]
    first = SAE_TYPES.index(base) if base in SAE_TYPES else len(SAE_TYPES)
    return (first, base, tuple(tags), *idx, cond[3] if cond[3] is not None else -1.0)


def condition(run: Run) -> Condition:
    """The run's condition: its arm (the SAE type + each condition axis off its default),
    normalization method, coeff mode and beta exponent."""
    tags = [
        str(run.config[key])
        for key, default in CONDITION_AXES.items()
        if run.config.get(key, default) not in (default, None)
    ]
    return ("+".join([run.sae_type, *tags]), run.norm, run.coeff, run.k)


def sweep_point(run: Run) -> int | None:
    """The run's value of the cell axis (sae.k), None for types without one."""
    values = [run.config.get(key) for key in CELL_AXES if run.config.get(key) is not None]
    return int(values[0]) if values else None


def _typed(key: str) -> bool:
    return key.startswith("sae.") and key.split(".")[1] not in SAE_COMMON_KEYS


def _axis(key: str) -> bool:
    return key in CONDITION_AXES or key in CELL_AXES


def _setting(run: Run) -> tuple[tuple[str, Any], ...]:
    def keep(k: str) -> bool:
        if k in AXES or k.startswith(AXIS_PREFIXES) or _typed(k) or _axis(k):
            return False
        if k in PER_CONDITION:
            return False
        return not any(k == b or k.startswith(b + ".") for b in BOOKKEEPING)

    return tuple(sorted((k, v) for k, v in run.config.items() if keep(k)))


def _variant(run: Run) -> tuple[tuple[str, Any], ...]:
    def keep(k: str) -> bool:
        return (_typed(k) and not _axis(k)) or k in PER_CONDITION

    return tuple(sorted((k, v) for k, v in run.config.items() if keep(k)))


@dataclass
class Cell:
    """One condition at one alpha (and one sae.k, where the type has it) in one section:
    its seeds (runs of any status)."""

    condition: Condition
    alpha: float | None
    runs: list[Run] = field(default_factory=list)
    sae_k: int | None = None  # the cell axis of topk-like types (CELL_AXES)

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    @property
    def scale(self) -> float:
        return self.runs[0].scale

    @property
    def skipped(self) -> bool:
        return any(r.status == "skipped" for r in self.done)

    @property
    def sources(self) -> list[str]:
        """The run dirs (relative to the sweep) whose metrics.json the numbers come from."""
        return sorted({(r.same_as if r.status == "skipped" else r.rel) or r.rel for r in self.done})

    def values(self, metric: str, layer: int | str = "mean") -> list[float | None]:
        return [r.value(metric, layer) for r in sorted(self.done, key=lambda r: r.seed)]

    def stat(self, metric: str, layer: int | str = "mean") -> Stat | None:
        return mean_ci(self.values(metric, layer))


@dataclass
class Section:
    title: str
    setting: dict[str, Any]  # the differing keys' values, for the title and report.json
    runs: list[Run]
    cells: dict[Condition, list[Cell]] = field(default_factory=dict)  # cells by alpha

    def layers(self) -> list[int]:
        return sorted({layer for r in self.runs for layer in r.layers()})

    def done(self, cond: Condition) -> list[Run]:
        """The condition's runs with numbers (finished, or skipped as equal to one)."""
        return [r for c in self.cells.get(cond, []) for r in c.done]

    def representative(self, cond: Condition) -> Cell | None:
        """The condition's cell at its default alpha (scale 1), else (and for a sweep over
        sae.k) its middle one."""
        done = [c for c in self.cells.get(cond, []) if c.done]
        if not done:
            return None
        default = [c for c in done if c.scale == 1.0 and c.sae_k is None]
        return default[0] if default else done[len(done) // 2]


def _cells(runs: list[Run]) -> dict[Condition, list[Cell]]:
    out: dict[Condition, dict[tuple[float | None, int | None], Cell]] = {}
    for r in runs:
        cond, point = condition(r), (r.alpha, sweep_point(r))
        cells = out.setdefault(cond, {})
        cells.setdefault(point, Cell(cond, r.alpha, sae_k=point[1])).runs.append(r)
    return {
        cond: sorted(
            by_point.values(), key=lambda c: (c.alpha is None, c.alpha or 0.0, c.sae_k or 0)
        )
        for cond, by_point in sorted(out.items(), key=lambda kv: order(kv[0]))
    }


def _seen(parts: list[tuple[dict[str, Any], list[Run]]], key: str) -> set[str]:
    """The values of `key` across sections; a type's own key counts only where the type is."""
    typed = key.endswith(")")
    return {repr(keys.get(key)) for keys, _ in parts if not typed or key in keys}


def sections(runs: list[Run]) -> list[Section]:
    """The runs' sections: one per setting and per choice of one variant for each SAE type
    and normalization method (runs of one with a single variant appear in every section of
    their setting)."""
    parts: list[tuple[dict[str, Any], list[Run]]] = []
    by_setting: dict[tuple, list[Run]] = {}
    for r in runs:
        by_setting.setdefault(_setting(r), []).append(r)
    for setting, members in by_setting.items():
        variants: dict[tuple[str, str], dict[tuple, list[Run]]] = {}
        for r in members:
            unit = (r.sae_type, r.norm)
            variants.setdefault(unit, {}).setdefault(_variant(r), []).append(r)
        units = sorted(variants)
        for choice in itertools.product(*(sorted(variants[u], key=repr) for u in units)):
            keys = dict(setting)
            chosen: list[Run] = []
            for u, var in zip(units, choice, strict=True):
                keys |= {f"{k} ({u[0]}, {u[1]})": v for k, v in var}
                chosen += variants[u][var]
            parts.append((keys, chosen))
    all_keys = sorted({k for keys, _ in parts for k in keys})
    differ = [k for k in all_keys if len(_seen(parts, k)) > 1]
    out = []
    for keys, members in parts:
        shown = {k: keys.get(k) for k in differ}
        title = ", ".join(f"{k}={v}" for k, v in shown.items()) or "all runs"
        out.append(Section(title, shown, members, _cells(members)))
    return sorted(out, key=lambda s: s.title)
