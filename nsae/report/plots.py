"""The report's figures (matplotlib, Agg backend), one PNG each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nsae.report.jobs import NORMS, SAE_TYPES, Job

COLORS = plt.get_cmap("tab10").colors


def style(job: Job) -> dict[str, object]:
    i = SAE_TYPES.index(job.sae_type) * len(NORMS) + NORMS.index(job.norm)
    return {
        "color": COLORS[i % len(COLORS)],
        "linestyle": "-" if job.coeff == "alpha" else "--",
        "marker": "o" if job.sae_type == "none" else "s",
        "label": job.label,
    }


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def by_layer(jobs: list[Job], metric: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for job in jobs:
        ax.plot(job.summary["layers"], job.per_layer(metric), **style(job))  # type: ignore[index]
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def l0_vs_norm(jobs: list[Job], path: Path) -> Path:
    """Each layer's L0 against its mean input norm, with a least-squares line and r."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for job in jobs:
        x, y = np.array(job.mean_norms()), np.array(job.per_layer("l0"))
        st = style(job)
        r = np.corrcoef(x, y)[0, 1] if len(x) > 1 and x.std() and y.std() else float("nan")
        ax.scatter(x, y, color=st["color"], marker=st["marker"])
        if len(x) > 1 and x.std():
            slope, icept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(
                xs,
                slope * xs + icept,
                color=st["color"],
                linestyle=st["linestyle"],
                label=f"{job.label} (r={r:.2f})",
            )
    ax.set_xlabel("layer mean input norm ||x||")
    ax.set_ylabel("mean L0")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def pareto(curves: dict[str, list[Job]], metric: str, ylabel: str, path: Path) -> Path:
    """Per condition, its alpha sub-grid as a curve of metric against mean L0."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for runs in curves.values():
        pts = sorted(
            (j.mean("l0"), j.mean(metric))
            for j in runs
            if j.mean("l0") is not None and j.mean(metric) is not None
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), **style(runs[0]))
    ax.set_xscale("log")
    ax.set_xlabel("mean L0")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def distributions(
    samples: dict[str, np.ndarray],
    xlabel: str,
    path: Path,
    transform: Callable[[np.ndarray], np.ndarray] = lambda a: a,
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in samples.items():
        ax.hist(transform(values), bins=60, histtype="step", density=True, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
