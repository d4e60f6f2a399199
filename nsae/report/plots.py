"""The report's figure kinds (matplotlib, Agg backend), one PNG each, from plain numbers:
`panels` draws one subplot per panel (e.g. per layer) and one line per series (e.g. per
condition), with optional error bars; `histograms` and `boxes` draw distributions. Their
shared size, splitting, ticks and legend: plot_layout.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, MaxNLocator

from nsae.report.plot_layout import (
    HORIZONTAL,
    MAX_SERIES,
    PANEL_HEIGHT,
    RC,
    WIDTH,
    Series,
    legend_width,
    log_ticks,
    new_figure,
    outside_legend,
    plain_ticks,
    save,
    series_colors,
    series_style,
    split_panels,
    tick_label,
)


def panels(
    data: dict[str, dict[str, Series]],
    xlabel: str,
    ylabel: str,
    path: Path,
    logx: bool = False,
    logy: bool = False,
    hline: float | None = None,
    max_series: int = MAX_SERIES,
    integer_x: bool | None = None,
    markers: bool = True,
) -> Path:
    """One subplot per panel title, one line per series name: (x, y) or (x, y, y_err).

    A panel with more than max_series series becomes one sub-panel per arm (see
    plot_layout.split); integer_x (default: xlabel is "layer" or every x is an integer) asks
    for integer ticks; markers=False draws lines only (long curves, e.g. training steps)."""
    parts = split_panels(data, max_series) if data else [("", "", {})]
    shown = {title: series for title, _, series in parts}
    families = [fam for _, fam, _ in parts]
    names = list(dict.fromkeys(n for s in shown.values() for n, p in s.items() if len(p[0])))
    colors = series_colors(names)
    xs_all = [x for s in shown.values() for p in s.values() for x in p[0]]
    if integer_x is None:
        integer_x = xlabel == "layer" or bool(
            xs_all
            and all(math.isfinite(float(x)) and float(x).is_integer() for x in xs_all)
            and max(xs_all) - min(xs_all) <= 50
        )
    sizes = {f: families.count(f) for f in families}
    n = len(shown)
    cols = next(iter(sizes.values())) if len(set(sizes.values())) == 1 else 0
    if cols == 2 and len(sizes) > 4:
        cols = 4  # two panels' arms side by side a row: many layers stay a readable height
    elif cols not in (2, 3):
        cols = 1 if n == 1 else 2 if n <= 4 else 3
    right = n == 1
    with rc_context(RC):
        fig, axes = new_figure(n, cols, PANEL_HEIGHT + (1.0 if right else 0.0))
        first: dict[str, Axes] = {}
        for ax, fam in zip(axes, families, strict=True):
            if fam in first:
                ax.sharex(first[fam])
                ax.sharey(first[fam])
            else:
                first[fam] = ax
        handles: dict[str, Any] = {}
        for ax, (title, series) in zip(axes, shown.items(), strict=True):
            for name, pts in series.items():
                xs, ys = np.asarray(pts[0], dtype=float), np.asarray(pts[1], dtype=float)
                if len(xs) == 0:
                    continue
                err = None
                if len(pts) == 3:
                    err = np.array([np.nan if e is None else e for e in pts[2]], dtype=float)  # type: ignore[misc]
                kw = {"color": colors[name], "label": name, "markersize": 5, **series_style(name)}
                if not markers:
                    kw["marker"] = ""
                if err is not None and np.isfinite(err).any():
                    h = ax.errorbar(xs, ys, yerr=np.nan_to_num(err), capsize=2, **kw)
                else:
                    (h,) = ax.plot(xs, ys, **kw)
                handles.setdefault(name, h)
            if hline is not None:
                ax.axhline(hline, color="grey", linewidth=0.8, linestyle=":")
            if title:
                ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_xscale("log" if logx else "linear")
            ax.set_yscale("log" if logy else "linear")
            ax.grid(True, color="0.92", linewidth=0.6)
        legend_w = legend_width(names) if right and names else 0.0
        width_in = (WIDTH - legend_w) / cols - 0.9
        for ax in first.values():
            ax.autoscale_view()
            if logx:
                log_ticks(ax.xaxis, *ax.get_xlim(), width_in)
            else:
                plain_ticks(ax.xaxis)
                if integer_x:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if logy:
                log_ticks(ax.yaxis, *ax.get_ylim(), PANEL_HEIGHT - 1.0)
            else:
                plain_ticks(ax.yaxis)
        if handles:
            outside_legend(fig, list(handles.values()), list(handles), right)
        return save(fig, path)


def histograms(
    data: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, path: Path
) -> Path:
    """One bar histogram per panel from (edges [n+1], counts [n]), symlog count axis."""
    n = max(len(data), 1)
    with rc_context(RC):
        fig, axes = new_figure(n, 1 if n == 1 else 2 if n <= 4 else 3, 2.9)
        for ax, (title, (edges, counts)) in zip(axes, data.items(), strict=False):
            e = np.asarray(edges, dtype=float)
            ax.bar(e[:-1], np.asarray(counts, dtype=float), width=np.diff(e), align="edge")
            ax.set_yscale("symlog")
            ax.yaxis.set_major_formatter(FuncFormatter(tick_label))
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("count (symlog)")
            plain_ticks(ax.xaxis)
        return save(fig, path)


def boxes(data: dict[str, dict[str, np.ndarray]], ylabel: str, path: Path, logy: bool) -> Path:
    """One subplot per panel; one horizontal box (quartiles, 1-99% whiskers) per named sample,
    its name on the left in full; `ylabel` names the value axis (log if logy)."""
    n = max(len(data), 1)
    same = len({tuple(s) for s in data.values()}) == 1  # names shown in the first column only
    cols = 1 if n == 1 else 2 if n <= 4 or not same else 3
    rows = max((len(s) for s in data.values()), default=1)
    with rc_context(RC):
        fig, axes = new_figure(n, cols, 0.8 + 0.3 * rows)
        for i, (ax, (title, samples)) in enumerate(zip(axes, data.items(), strict=False)):
            names = list(samples)
            pos = np.arange(len(names), 0, -1)  # first name at the top
            ax.boxplot(
                [samples[s] for s in names],
                positions=pos,
                whis=(1, 99),
                showfliers=False,
                **HORIZONTAL,
            )
            ax.set_yticks(pos, names if i % cols == 0 or not same else [""] * len(names))
            ax.set_ylim(0.4, len(names) + 0.6)
            if logy:
                ax.set_xscale("log")
                log_ticks(ax.xaxis, *ax.get_xlim(), (WIDTH - 3) / cols - 0.4)
            else:
                plain_ticks(ax.xaxis)
            ax.set_title(title)
            ax.set_xlabel(ylabel)
            ax.grid(True, axis="x", color="0.92", linewidth=0.6)
        return save(fig, path)
