"""The report's figures (matplotlib, Agg backend), one PNG each, from plain numbers.

`panels` draws one subplot per panel (e.g. per layer) and one line per series (e.g. per
condition), with optional error bars; the other helpers draw distributions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

COLORS = plt.get_cmap("tab20").colors
Series = (
    tuple[Sequence[float], Sequence[float]]
    | tuple[Sequence[float], Sequence[float], Sequence[float | None]]
)


def _color(name: str, names: list[str]) -> tuple[float, ...]:
    return COLORS[names.index(name) % len(COLORS)]


def _style(name: str) -> dict[str, str]:
    return {
        "linestyle": "--" if "/beta" in name else "-",
        "marker": "s" if "normalized" in name else "o",
    }


def save(fig: plt.Figure, path: Path, bottom: float = 0.16) -> Path:
    """Write a PNG (fixed margins: tight_layout costs more than the drawing on log axes)."""
    fig.subplots_adjust(left=0.09, right=0.98, bottom=bottom, top=0.9, wspace=0.32, hspace=0.55)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    if path.stat().st_size == 0:
        raise OSError(f"empty figure written to {path}")
    return path


def _grid(n: int, width: float = 4.2, height: float = 3.2) -> tuple[plt.Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def panels(
    data: dict[str, dict[str, Series]],
    xlabel: str,
    ylabel: str,
    path: Path,
    logx: bool = False,
    logy: bool = False,
    hline: float | None = None,
) -> Path:
    """One subplot per panel title, one line per series name: (x, y) or (x, y, y_err)."""
    names = sorted({s for series in data.values() for s in series})
    fig, axes = _grid(max(len(data), 1))
    for ax, (title, series) in zip(axes, data.items(), strict=False):
        for name, pts in series.items():
            xs, ys = np.asarray(pts[0], dtype=float), np.asarray(pts[1], dtype=float)
            if len(xs) == 0:
                continue
            err = None
            if len(pts) == 3:
                err = np.array([np.nan if e is None else e for e in pts[2]], dtype=float)  # type: ignore[misc]
            kw = {"color": _color(name, names), "label": name, "markersize": 4, **_style(name)}
            if err is not None and np.isfinite(err).any():
                ax.errorbar(xs, ys, yerr=np.nan_to_num(err), capsize=2, **kw)
            else:
                ax.plot(xs, ys, **kw)
        if hline is not None:
            ax.axhline(hline, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap within a decade
        if logy:
            ax.set_yscale("log")
    if names:
        axes[0].legend(fontsize=6)
    return save(fig, path)


def histograms(
    data: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, path: Path
) -> Path:
    """One bar histogram per panel from (edges [n+1], counts [n]), log count axis."""
    fig, axes = _grid(max(len(data), 1))
    for ax, (title, (edges, counts)) in zip(axes, data.items(), strict=False):
        e = np.asarray(edges, dtype=float)
        ax.bar(e[:-1], np.asarray(counts, dtype=float), width=np.diff(e), align="edge")
        ax.set_yscale("symlog")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    return save(fig, path)


def boxes(data: dict[str, dict[str, np.ndarray]], ylabel: str, path: Path, logy: bool) -> Path:
    """One subplot per panel; one box (quartiles, 1-99% whiskers) per named sample."""
    fig, axes = _grid(max(len(data), 1), width=5.5, height=4.5)
    for ax, (title, samples) in zip(axes, data.items(), strict=False):
        names = list(samples)
        ax.boxplot([samples[n] for n in names], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right", fontsize=6)
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel)
    return save(fig, path, bottom=0.4)
