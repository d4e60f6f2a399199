"""The report's figures read through matplotlib's own API (after drawing): at most 8 series a
panel (more are split by arm), one legend outside every axes and inside the figure, labelled
ticks inside a decade on log axes, integer layer ticks, y axes labelled with the metric and
never cut, PNGs at least 800 px wide; the training curves are one line per condition."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from nsae.report import plot_layout, plots
from nsae.report.groups import label, sections
from nsae.report.runs import load_sweep
from nsae.report.sections import Ctx, curves
from tests.test_report_fixture import config, write_run

CONDS = [
    (sae, norm, coeff, None if coeff == "alpha" else 1.0)
    for sae in ("none", "normalized_sae")
    for norm in ("none", "input_norm", "input_norm_squared")
    for coeff in ("alpha", "beta")
]
NAMES = [label(c) for c in CONDS]  # 6 "standard SAE, ..." and 6 "Normalized SAE, ..."


@pytest.fixture(scope="module")
def drawn() -> Iterator[dict[Path, Figure]]:
    """{png path: its figure, drawn}: plots.save is wrapped to keep each figure."""
    figs: dict[Path, Figure] = {}
    save = plots.save

    def keep(fig: Figure, path: Path, *args: object, **kw: object) -> Path:
        out = save(fig, path, *args, **kw)  # type: ignore[arg-type]
        fig.canvas.draw()  # closed by pyplot, still drawable
        figs[path] = fig
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save", keep)
        yield figs


@pytest.fixture(scope="module")
def pareto(tmp_path_factory: pytest.TempPathFactory, drawn: dict) -> tuple[Path, Figure]:
    """12 conditions on 2 layers against a log L0 axis spanning 12..60, with error bars."""
    rng = np.random.default_rng(0)
    xs = [12.0, 20.0, 35.0, 60.0]
    data = {
        f"layer {i}": {n: (xs, list(0.014 + 0.001 * rng.random(4)), [5e-4] * 4) for n in NAMES}
        for i in (0, 1)
    }
    path = tmp_path_factory.mktemp("figs") / "pareto.png"
    plots.panels(data, "L0 (log)", "relative reconstruction bias", path, logx=True)
    return path, drawn[path]


def _width(png: Path) -> int:
    return matplotlib.image.imread(str(png)).shape[1]


def _overlap(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _inside(box: Bbox, frame: Bbox) -> bool:
    return (
        box.x0 >= frame.x0 - 0.5
        and box.y0 >= frame.y0 - 0.5
        and box.x1 <= frame.x1 + 0.5
        and box.y1 <= frame.y1 + 0.5
    )


def _labels(axis: Axis, lo: float, hi: float) -> list[Text]:
    """The visible, non-empty tick labels of `axis` at positions inside [lo, hi]."""
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [
        t.label1
        for t in ticks
        if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi
    ]


def test_split_by_arm_at_most_8_series_a_panel() -> None:
    pts = ([1.0, 2.0], [1.0, 2.0])
    shown = plot_layout.split({"layer 0": dict.fromkeys(NAMES, pts), "few": {"a": pts}})
    assert list(shown) == ["layer 0 — standard SAE", "layer 0 — Normalized SAE", "few"]
    assert [len(s) for s in shown.values()] == [6, 6, 1]
    many = plot_layout.split({"p": {f"standard SAE, run {i}": pts for i in range(20)}})
    assert [len(s) for s in many.values()] == [7, 7, 6]
    assert next(iter(many)) == "p — standard SAE (1/3)"
    empty = plot_layout.split({"p": {f"x{i}": ([], []) for i in range(12)} | {"a": pts}})
    assert list(empty) == ["p"]  # series without points do not count


def test_panels_split_and_share_limits(pareto: tuple[Path, Figure]) -> None:
    _, fig = pareto
    axes = fig.get_axes()
    titles = [ax.get_title() for ax in axes]
    arms = ("standard SAE", "Normalized SAE")
    assert titles == [f"layer {i} — {a}" for i in (0, 1) for a in arms]
    for ax, arm in zip(axes, arms * 2, strict=True):
        series = ax.get_legend_handles_labels()[1]
        assert len(series) == 6 and all(s.startswith(arm + ", ") for s in series)
        assert ax.get_legend() is None  # no legend on the data
    assert axes[0].get_ylim() == axes[1].get_ylim()  # the arms of one panel: same scale


def test_legend_outside_every_axes_and_inside_the_figure(pareto: tuple[Path, Figure]) -> None:
    _, fig = pareto
    (leg,) = fig.legends
    box = leg.get_window_extent()
    assert [t.get_text() for t in leg.get_texts()] == NAMES
    assert min(t.get_fontsize() for t in leg.get_texts()) >= 8
    for ax in fig.get_axes():
        assert not _overlap(box, ax.get_window_extent()), ax.get_title()
        assert not _overlap(box, ax.get_tightbbox()), ax.get_title()  # nor its labels
    assert _inside(box, fig.bbox)


def test_log_axis_inside_a_decade_has_tick_labels(pareto: tuple[Path, Figure]) -> None:
    _, fig = pareto
    for ax in fig.get_axes():
        lo, hi = ax.get_xlim()
        assert lo > 11 and hi < 70
        labels = _labels(ax.xaxis, lo, hi)
        assert len(labels) >= 2, [t.get_text() for t in labels]
        assert all(t.get_fontsize() >= 9 for t in labels)
        boxes = [t.get_window_extent() for t in labels]
        assert not any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))


def test_y_label_is_the_metric_and_nothing_is_cut(pareto: tuple[Path, Figure]) -> None:
    path, fig = pareto
    assert _width(path) >= 800 and fig.get_figwidth() * fig.dpi >= 800
    for ax in fig.get_axes():
        assert ax.get_ylabel() == "relative reconstruction bias"
        assert ax.get_xlabel() == "L0 (log)"
        assert _inside(ax.yaxis.label.get_window_extent(), fig.bbox)
        assert _inside(ax.title.get_window_extent(), fig.bbox)
        lo, hi = ax.get_ylim()
        ticks = _labels(ax.yaxis, lo, hi)
        assert ticks and all(_inside(t.get_window_extent(), fig.bbox) for t in ticks)
        assert all(t.get_fontsize() >= 9 for t in ticks)


def test_layer_axis_has_integer_ticks(tmp_path: Path, drawn: dict) -> None:
    data = {"slope (default alpha)": {n: ([0, 1, 2, 3], [0.1, 0.2, 0.1, 0.3]) for n in NAMES[:3]}}
    path = plots.panels(data, "layer", "slope", tmp_path / "slope.png", hline=0)
    fig = drawn[path]
    (ax,) = fig.get_axes()
    lo, hi = ax.get_xlim()
    labels = _labels(ax.xaxis, lo, hi)
    assert [t.get_text() for t in labels] == ["0", "1", "2", "3"]
    assert ax.get_ylabel() == "slope"
    (leg,) = fig.legends  # a single panel: the legend to its right, outside it
    assert not _overlap(leg.get_window_extent(), ax.get_tightbbox())
    assert _inside(leg.get_window_extent(), fig.bbox)
    assert _width(path) >= 800


def test_boxes_long_names_readable_and_not_cut(tmp_path: Path, drawn: dict) -> None:
    rng = np.random.default_rng(1)
    data = {f"layer {i}": {n: rng.random(50) + 0.5 for n in NAMES} for i in range(3)}
    path = plots.boxes(data, "decoder row norm (log)", tmp_path / "boxes.png", logy=True)
    fig = drawn[path]
    assert _width(path) >= 800
    first = fig.get_axes()[0]
    shown = [t for t in first.get_yticklabels() if t.get_text()]
    assert [t.get_text() for t in shown] == NAMES  # in full, first at the top
    assert shown[0].get_window_extent().y0 > shown[-1].get_window_extent().y0
    for t in shown:
        assert t.get_fontsize() >= 9 and _inside(t.get_window_extent(), fig.bbox)
    for ax in fig.get_axes():
        assert ax.get_xlabel() == "decoder row norm (log)"
        lo, hi = ax.get_xlim()
        assert len(_labels(ax.xaxis, lo, hi)) >= 2  # a log axis inside a decade: labelled


def test_histograms_wide_and_labelled(tmp_path: Path, drawn: dict) -> None:
    data = {f"layer {i}": (np.linspace(0, 100, 41), [3] * 40) for i in range(5)}
    path = plots.histograms(data, "input norm ||x||", tmp_path / "hist.png")
    fig = drawn[path]
    assert _width(path) >= 800
    for ax in fig.get_axes():
        assert ax.get_xlabel() == "input norm ||x||" and ax.get_ylabel()
        assert _inside(ax.get_tightbbox(), fig.bbox)


def test_seed_mean_at_the_steps_every_seed_logged() -> None:
    got = curves.seed_mean([([0, 10, 20], [1.0, 2.0, 3.0]), ([0, 10], [3.0, 4.0])])
    assert got == ([0, 10], [2.0, 3.0])
    assert curves.seed_mean([]) == ([], [])


def test_training_curves_one_line_per_condition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sae, norm, coeff, k in CONDS[:2] + CONDS[6:8]:
        for seed in range(3):
            name = f"{sae}_{norm}_{coeff}_{seed}"
            write_run(tmp_path, name, config(sae, norm, coeff, seed=seed, k=k))
    (section,) = sections(load_sweep(tmp_path))
    seen: dict[str, dict] = {}
    monkeypatch.setattr(
        plots, "panels", lambda data, xlabel, ylabel, path, **kw: seen.update({ylabel: data})
    )
    curves.training(section, Ctx(tmp_path, tmp_path / "report_files"))
    assert set(seen) == {"L0", "explained variance"}
    (series,) = seen["L0"].values()
    assert sorted(series) == sorted(label(c) for c in CONDS[:2] + CONDS[6:8])
    steps, l0 = series[NAMES[0]]
    assert steps[-1] == 100 and l0[-1] == pytest.approx(10 + 100 / 101)  # the seeds' mean
