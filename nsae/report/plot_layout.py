"""The layout every report figure shares (matplotlib, Agg backend): size, text, colours,
panel splitting, ticks, the legend, and writing the PNG.

Every figure is WIDTH inches at DPI (1100 px: the report page's width, so 100% zoom in the
HTML), laid out by matplotlib's constrained layout (tick labels, axis labels and titles are
never cut), with 9-10 pt text. A panel shows at most MAX_SERIES series: a panel with more is
split into sub-panels by arm (the series name before its first ", ", e.g. "standard SAE" and
"Normalized SAE"), titled "<panel> — <arm>", which share their axes' limits. The legend is one
per figure, outside the axes (to the right of a single panel, below several). Log axes carry
labelled ticks at every decade, and inside a decade when they span too few (1, 2, 5 x 10^n,
finer when the axis spans less); an axis of layers (or of few integers) has integer ticks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.legend import Legend
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    ScalarFormatter,
)

Series = (
    tuple[Sequence[float], Sequence[float]]
    | tuple[Sequence[float], Sequence[float], Sequence[float | None]]
)

DPI = 100
WIDTH = 11.0  # inches: 1100 px, document.py's page width
PANEL_HEIGHT = 3.3  # inches per row of panels
MAX_SERIES = 8  # series per panel
RC = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
}
SPLIT = " — "  # between a panel's title and the arm of a sub-panel
COLORS = plt.get_cmap("tab20").colors
_MPL = tuple(int(p) for p in matplotlib.__version__.split(".")[:2])
HORIZONTAL: dict[str, Any] = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}


def series_colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    """Distinct colours per name: tab10 up to 10 names, tab20 up to 20, else turbo."""
    if len(names) <= 10:
        cs = list(plt.get_cmap("tab10").colors)
    elif len(names) <= 20:
        cs = list(COLORS)
    else:
        cs = [plt.get_cmap("turbo")(v) for v in np.linspace(0.05, 0.95, len(names))]
    return {n: cs[i % len(cs)] for i, n in enumerate(names)}


# overlays: points of the other series marked again, without a line
CHOSEN = "chosen"  # a black ring
EXTRAPOLATED = "extrapolated (L0s do not bracket)"  # a black cross
OVERLAYS = {
    CHOSEN: {"marker": "o", "markersize": 13, "markerfacecolor": "none"},
    EXTRAPOLATED: {"marker": "x", "markersize": 9},
}


def series_style(name: str) -> dict[str, Any]:
    """Dashed for beta, square markers for the Normalized SAE; an overlay (OVERLAYS) its
    black marker and no line."""
    if name in OVERLAYS:
        return OVERLAYS[name] | {"linestyle": "", "color": "black", "markeredgewidth": 1.6}
    return {
        "linestyle": "--" if ", beta" in name else "-",
        "marker": "s" if "Normalized" in name else "o",
    }


def arm(name: str) -> str:
    """The arm of a series name: its text before the first ", " ("standard SAE")."""
    return name.split(", ", 1)[0]


def split_panels(data: dict[str, dict[str, Series]], limit: int) -> list[tuple[str, str, dict]]:
    """[(sub-panel title, panel title, {series name: points})], see `split`."""
    out: list[tuple[str, str, dict]] = []
    for title, series in data.items():
        names = [n for n, pts in series.items() if len(pts[0])]
        if len(names) <= limit:
            out.append((title, title, series))
            continue
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(arm(n), []).append(n)
        for g, members in groups.items():
            k = math.ceil(len(members) / limit)
            size = math.ceil(len(members) / k)
            for j in range(k):
                part = f" ({j + 1}/{k})" if k > 1 else ""
                chunk = members[j * size : (j + 1) * size]
                if chunk:
                    sub = f"{title}{SPLIT}{g}{part}"
                    out.append((sub, title, {n: series[n] for n in chunk}))
    return out


def split(data: dict[str, dict[str, Series]], limit: int = MAX_SERIES) -> dict[str, dict]:
    """{sub-panel title: {series name: points}}: the panels with at most `limit` non-empty
    series each; a panel with more is split by arm, and an arm with more into equal chunks."""
    return {title: series for title, _, series in split_panels(data, limit)}


def tick_label(v: float, _pos: int | None = None) -> str:
    """A tick label: plain numbers ("20", "0.05") between 1e-3 and 1e5, else 10^n."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.6g}"
    e = math.log10(abs(v))
    return f"$10^{{{round(e)}}}$" if abs(e - round(e)) < 1e-9 else f"{v:.0e}"


def log_ticks(axis: Axis, lo: float, hi: float, length_in: float) -> None:
    """Labelled ticks on a log axis from lo to hi (axis length in inches): every decade, or
    where that gives fewer than 3 labels 1, 2, 5 x 10^n (finer while still fewer than 3),
    as long as neighbouring labels keep apart (else every n-th decade); unlabelled minor
    ticks at 2..9 x 10^n."""
    if not (0 < lo < hi and math.isfinite(hi)):
        return
    span = math.log10(hi / lo)
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def ticks(subs: Sequence[float]) -> list[float]:
        vals = sorted(s * 10.0**e for e in range(e0, e1 + 1) for s in subs)
        return [v for v in vals if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]

    def apart(vals: list[float]) -> bool:
        width = [len(tick_label(v)) * 0.075 + 0.1 for v in vals]  # inches at 9 pt, with a gap
        return all(
            length_in * math.log10(b / a) / span >= (wa + wb) / 2
            for a, b, wa, wb in zip(vals, vals[1:], width, width[1:], strict=False)
        )

    chosen: list[float] = []
    for subs in ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        cand = ticks(subs)
        if not apart(cand):
            break
        chosen = cand
        if len(cand) >= 3:
            break
    if len(chosen) >= 2:
        axis.set_major_locator(FixedLocator(chosen))
    elif span > 1:  # too many decades to label each: every n-th
        axis.set_major_locator(LogLocator(base=10, subs=(1.0,), numticks=int(length_in / 0.5)))
    else:  # narrower than the finest 10^n grid: evenly spaced plain numbers
        axis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    axis.set_major_formatter(FuncFormatter(tick_label))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=100))
    axis.set_minor_formatter(NullFormatter())


def plain_ticks(axis: Axis) -> None:
    """Plain numbers on a linear axis: no offset, scientific only outside 1e-3..1e5."""
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-3, 5))
    axis.set_major_formatter(fmt)


def new_figure(n: int, cols: int, height: float = PANEL_HEIGHT) -> tuple[plt.Figure, list[Axes]]:
    """A constrained-layout figure WIDTH wide with n axes, `cols` a row, `height` per row."""
    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(WIDTH, height * rows), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06, wspace=0.04, hspace=0.04)
    gs = fig.add_gridspec(rows, cols)
    axes = [fig.add_subplot(gs[i // cols, i % cols]) for i in range(n)]
    return fig, axes


def save(fig: plt.Figure, path: Path, bottom: float | None = None) -> Path:
    """Write the figure as a PNG at DPI. `bottom` (a fraction of the height) applies only to
    a figure without constrained layout."""
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(left=0.1, right=0.98, bottom=bottom or 0.16, top=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    if path.stat().st_size == 0:
        raise OSError(f"empty figure written to {path}")
    return path


def legend_width(labels: list[str]) -> float:
    """Inches one legend entry of these labels takes (9 pt text: ~0.075 in a character, with
    its handle)."""
    return max(len(s) for s in labels) * 0.075 + 0.75


def outside_legend(fig: plt.Figure, handles: list, labels: list[str], right: bool) -> Legend:
    """The figure's legend outside its axes: to the right (if asked and it takes at most 55%
    of the width), else below in as many columns as fit across; the figure grows by the
    height of a legend below. Measured with the renderer, so never wider than the figure."""
    renderer = fig.canvas.get_renderer()
    if right:
        leg = fig.legend(handles, labels, loc="outside right upper", frameon=False)
        if leg.get_window_extent(renderer).width <= 0.55 * fig.bbox.width:
            return leg
        leg.remove()
    ncol = max(1, min(len(labels), int((WIDTH - 0.3) / legend_width(labels))))
    while True:
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
        box = leg.get_window_extent(renderer)
        if ncol == 1 or box.width <= fig.bbox.width - 0.2 * DPI:
            break
        leg.remove()
        ncol -= 1
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + box.height / fig.dpi + 0.1)
    return leg
