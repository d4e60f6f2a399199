"""Curves: metrics per norm decile, training curves from logs/metrics.csv with the
convergence check (stats.converged), and train-split versus eval L0 with epochs."""

from __future__ import annotations

import csv
import math

import numpy as np

from nsae.report import plots
from nsae.report.document import Block, Collapsed, Heading, Table, Text
from nsae.report.groups import Cell, Section, label
from nsae.report.runs import Run
from nsae.report.sections import Ctx, fmt, fmt_stat, natural
from nsae.report.stats import converged, mean_ci

DECILE = {"l0": "L0", "nmse": "normalised MSE", "feature_suppression": "feature suppression"}
TRAINING = {
    "L0": ("train/l0/mean", None),
    "explained variance": ("train/explained_variance/mean", "train/fvu/mean"),
}


def reps(section: Section) -> dict[str, Cell]:
    out = {label(c): section.representative(c) for c in section.cells}
    return {k: v for k, v in out.items() if v is not None}


def decile_curve(cell: Cell, layer: int, field: str) -> tuple[list[float], list[float]]:
    """Mean over seeds of each non-empty norm-decile bin's `field`."""
    per_bin: dict[int, list[float]] = {}
    for r in cell.done:
        for b in (r.summary or {}).get("by_norm_decile", {}).get(f"layer_{layer}", []) or []:
            if b.get(field) is not None:
                per_bin.setdefault(int(b["bin"]), []).append(float(b[field]))
    xs = sorted(per_bin)
    return [x + 1 for x in xs], [float(np.mean(per_bin[x])) for x in xs]


def read_log(run: Run) -> dict[str, tuple[list[float], list[float]]]:
    """{series name: (steps, values)} from the run's logs/metrics.csv (blanks skipped)."""
    path = (run.origin or run.path) / "logs" / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, (key, fvu_key) in TRAINING.items():
        col, conv = (key, lambda v: v) if rows and key in rows[0] else (fvu_key, lambda v: 1 - v)
        pts = [
            (float(r["step"]), conv(float(r[col])))
            for r in rows
            if col and r.get(col) not in (None, "") and r.get("step") not in (None, "")
        ]
        if pts:
            out[name] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def log_scale(series: dict[str, tuple[list[float], list[float]]]) -> bool:
    """A log axis for these curves: every value > 0, spanning more than a factor 10."""
    ys = [y for _, v in series.values() for y in v]
    return bool(ys) and min(ys) > 0 and max(ys) > 10 * min(ys)


def seed_mean(
    curves: list[tuple[list[float], list[float]]],
) -> tuple[list[float], list[float]]:
    """The mean over seeds' curves at the steps every seed logged (one seed: itself)."""
    if not curves:
        return [], []
    maps = [dict(zip(xs, ys, strict=True)) for xs, ys in curves]
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    return steps, [float(np.mean([m[x] for m in maps])) for x in steps]


def position0(section: Section) -> list[Block]:
    """The tokens at position 0 (by_norm_decile.position_0), seed means, per layer."""
    rows = []
    for name, cell in reps(section).items():
        for layer in section.layers():
            bins = [
                (r.summary or {}).get("by_norm_decile", {}).get("position_0", {}) for r in cell.done
            ]
            bins = [b.get(f"layer_{layer}") for b in bins if b.get(f"layer_{layer}")]
            if bins:
                vals = [mean_ci([b.get(f) for b in bins]) for f in DECILE]
                rows.append([name, str(layer), *(fmt_stat(v) for v in vals)])
    if not rows:
        return []
    return [
        Text("Tokens at position 0, apart from the deciles:"),
        Table(["condition", "layer", *DECILE.values()], rows),
    ]


def deciles(section: Section, ctx: Ctx) -> list[Block]:
    blocks: list[Block] = position0(section)
    for field, name in DECILE.items():
        data = {
            f"layer {layer}": {n: decile_curve(c, layer, field) for n, c in reps(section).items()}
            for layer in section.layers()
        }
        if any(pts[0] for series in data.values() for pts in series.values()):
            blocks += ctx.figure(
                f"decile_{field}",
                f"{name} against input-norm decile",
                lambda p, d=data, n=name: plots.panels(d, "norm decile (1 = lowest)", n, p),
            )
    return blocks


def training(section: Section, ctx: Ctx) -> list[Block]:
    rows, record, figs = [], {}, {name: {} for name in TRAINING}
    for name, cell in reps(section).items():
        row, verdicts = [name], {}
        logs = {r.rel: read_log(r) for r in cell.done}
        for metric in TRAINING:
            checks = [converged(*lg[metric]) for lg in logs.values() if metric in lg]
            flags = [c[0] for c in checks]
            ok = None if not flags or None in flags else all(flags)
            verdicts[metric] = {"converged": ok, "moves": [c[1] for c in checks]}
            moves = ", ".join(f"{c[1]:.1%}" for c in checks if c[1] is not None)
            row.append(
                {True: "yes", False: "no", None: "n/a"}[ok] + (f" ({moves})" if moves else "")
            )
            curve = seed_mean([lg[metric] for lg in logs.values() if metric in lg])
            if curve[0]:
                figs[metric][name] = curve
        record[name] = {"sources": sorted(logs), **verdicts}
        rows.append(row)
    blocks: list[Block] = [
        *ctx.part(
            "convergence",
            record,
            "Training curves",
            "Converged: L0 and explained variance (training batches, from logs/metrics.csv) "
            "moved less than 5% (|last - first| / |last|) over the last 20% of steps, in every "
            "seed of the condition's default-alpha cell (relative moves in brackets).",
        ),
        Table(["condition", "L0 converged", "explained variance converged"], rows),
    ]
    for metric, series in figs.items():
        if series:
            blocks += ctx.figure(
                f"training_{metric.replace(' ', '_')}",
                f"training {metric} (mean over the seeds of each condition's default-alpha cell)",
                lambda p, m=metric, s=series: plots.panels(
                    {m: s}, "step", m, p, logy=log_scale(s), markers=False
                ),
            )
    return blocks


def train_vs_eval(section: Section, ctx: Ctx) -> list[Block]:
    rows, data = [], {"eval": {}, "train split": {}}
    for name, cell in reps(section).items():
        ev, tr = cell.stat("l0"), cell.stat("train_split/l0")
        epochs = mean_ci([(r.summary or {}).get("provenance", {}).get("epochs") for r in cell.done])
        rows.append([name, fmt_stat(ev), fmt_stat(tr), fmt(epochs.mean if epochs else None)])
        for key, metric in (("eval", "l0"), ("train split", "train_split/l0")):
            pts = [(layer, cell.stat(metric, layer)) for layer in section.layers()]
            pts = [(x, s.mean) for x, s in pts if s is not None and math.isfinite(s.mean)]
            data[key][name] = ([p[0] for p in pts], [p[1] for p in pts])
    epochs_by_run = {
        r.rel: (r.summary or {}).get("provenance", {}).get("epochs")
        for r in section.runs
        if r.status == "done"
    }
    runs = sorted(epochs_by_run, key=natural)
    blocks: list[Block] = [
        *ctx.part(
            "epochs",
            epochs_by_run,
            "Train versus eval L0",
            "The same SAE evaluated on training-split contexts and on the held-out evaluation "
            "contexts (mean over layers; default-alpha cells). Epochs = train tokens / unique "
            "train tokens.",
        ),
        Table(["condition", "eval L0", "train-split L0", "epochs"], rows),
        Collapsed(
            "Epochs per run directory",
            [Table(["run dir", "epochs"], [[k, fmt(epochs_by_run[k])] for k in runs])],
        ),
    ]
    if any(v[0] for v in data["train split"].values()):
        blocks += ctx.figure(
            "train_vs_eval_l0",
            "L0 per layer: eval versus train split",
            lambda p: plots.panels(data, "layer", "L0", p),
        )
    return blocks


def build(section: Section, ctx: Ctx) -> list[Block]:
    return [
        Heading("Per norm decile", 3),
        *deciles(section, ctx),
        *training(section, ctx),
        *train_vs_eval(section, ctx),
    ]
