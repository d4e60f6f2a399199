"""`python -m nsae.report <sweep dir> [--wandb]`: write report.md, report.html, report.json
and the plots (in <sweep dir>/report_files/) from the jobs' metrics.json and norm stats."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from nsae.errors import NsaeError
from nsae.report import plots
from nsae.report.document import Block, Heading, Image, Table, Text, to_html, to_markdown
from nsae.report.jobs import COEFFS, NORMS, SAE_TYPES, Job, load_sweep

HEADLINE = {
    "l0": "mean L0",
    "explained_variance": "explained variance",
    "feature_suppression": "feature suppression",
    "reconstruction_score": "reconstruction score",
    "kl": "KL",
    "l1_l0_ratio": "L1/L0",
    "l0_cv": "cross-layer L0 CV",
}
MATCHED = ("explained_variance", "reconstruction_score", "kl", "feature_suppression")


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def by_condition(jobs: list[Job]) -> dict[tuple[str, str, str], list[Job]]:
    groups: dict[tuple[str, str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job.condition].append(job)
    return dict(sorted(groups.items(), key=lambda kv: condition_order(kv[0])))


def condition_order(cond: tuple[str, str, str]) -> tuple[int, int, int]:
    """The report's order: SAE type, then normalization, then coefficient mode."""
    axes = (SAE_TYPES, NORMS, COEFFS)
    return tuple(a.index(v) if v in a else len(a) for a, v in zip(axes, cond, strict=True))


def representative(runs: list[Job]) -> Job | None:
    """The condition's finished run at its default alpha (scale 1), else its middle alpha."""
    done = sorted((j for j in runs if j.summary), key=lambda j: j.scale)
    default = [j for j in done if j.scale == 1.0]
    return default[0] if default else (done[len(done) // 2] if done else None)


def headline(groups: dict, reps: dict) -> tuple[list[Block], dict]:
    blocks: list[Block] = [Heading("Results (2 x 3 x 2)")]
    data: dict = {}
    for coeff in COEFFS:
        if not any(c[2] == coeff for c in groups):
            blocks.append(Text(f"coeff={coeff}: no job in this sweep."))
            continue
        blocks.append(Heading(f"coeff = {coeff}", 3))
        rows = []
        for sae in SAE_TYPES:
            for metric, name in HEADLINE.items():
                row = [f"{sae} · {name}"]
                for norm in NORMS:
                    cond = (sae, norm, coeff)
                    rep = reps.get(cond)
                    if cond not in groups:
                        cell: str | float | None = "missing"
                    elif rep is None:
                        cell = "failed"
                    else:
                        cell = rep.mean(metric)
                    data.setdefault(coeff, {}).setdefault(sae, {}).setdefault(norm, {})[metric] = (
                        cell
                    )
                    row.append(cell if isinstance(cell, str) else fmt(cell))
                rows.append(row)
        blocks.append(Table(["SAE type · metric", *NORMS], rows))
    return blocks, data


def matched_l0(curves: dict[str, list[Job]]) -> list[Block]:
    """Each condition's metrics interpolated (in log L0) at L0 values all curves reach."""
    pts = {k: sorted((j.mean("l0"), j) for j in runs if j.mean("l0")) for k, runs in curves.items()}
    pts = {k: v for k, v in pts.items() if len(v) >= 2}
    if not pts:
        return []
    lo = max(v[0][0] for v in pts.values())
    hi = min(v[-1][0] for v in pts.values())
    blocks: list[Block] = [Heading("Matched L0")]
    if lo >= hi:
        return [
            *blocks,
            Text(
                f"The alpha sub-grids' L0 ranges do not overlap "
                f"({lo:.3g} > {hi:.3g}); widen them to compare at matched L0."
            ),
        ]
    rows = []
    for target in np.geomspace(lo, hi, 3):
        for label, runs in pts.items():
            x = np.log([l0 for l0, _ in runs])
            row = [f"{target:.3g}", label]
            for m in MATCHED:
                ys = [j.mean(m) for _, j in runs]
                ok = [(xi, y) for xi, y in zip(x, ys, strict=True) if y is not None]
                row.append(
                    fmt(float(np.interp(np.log(target), *zip(*ok, strict=True)))) if ok else "n/a"
                )
            rows.append(row)
    return [*blocks, Table(["L0", "condition", *MATCHED], rows)]


def dictionary_stats(reps: dict, out: Path, n_pairs: int = 4000) -> list[Block]:
    """Decoder column norms and sampled pairwise cosine similarities, per condition."""
    rng = np.random.default_rng(0)
    norms, cosines, rows = {}, {}, []
    for rep in reps.values():
        if rep is None:
            continue
        ns, cs = [], []
        for layer in rep.summary["layers"]:
            w = load_file(str(rep.path / f"layer_{layer}" / "sae_weights.safetensors"))
            W_dec = w["W_dec"].double().numpy()  # [M, D]
            n = np.linalg.norm(W_dec, axis=1)
            unit = W_dec / np.maximum(n, 1e-12)[:, None]
            i, j = rng.integers(0, len(unit), (2, n_pairs))
            keep = i != j
            ns.append(n)
            cs.append((unit[i[keep]] * unit[j[keep]]).sum(1))
        norms[rep.label], cosines[rep.label] = np.concatenate(ns), np.concatenate(cs)
        c = np.abs(cosines[rep.label])
        rows.append(
            [
                rep.label,
                fmt(norms[rep.label].mean()),
                fmt(norms[rep.label].std()),
                fmt(c.mean()),
                fmt(np.quantile(c, 0.99)),
            ]
        )
    if not rows:
        return []
    plots.distributions(norms, "decoder column norm", out / "decoder_norms.png")
    plots.distributions(
        cosines, "cosine similarity of decoder columns (sampled pairs)", out / "decoder_cosine.png"
    )
    return [
        Heading("Dictionary statistics"),
        Table(["condition", "mean norm", "std norm", "mean |cos|", "p99 |cos|"], rows),
        Image("report_files/decoder_norms.png", "decoder column norms"),
        Image("report_files/decoder_cosine.png", "pairwise decoder cosine similarity"),
    ]


def build(sweep_dir: Path) -> tuple[Path, Path, list[str]]:
    """Write the report; return its paths and the one-line warnings about the sweep."""
    if not sweep_dir.is_dir():
        raise NsaeError(f"sweep directory not found: {sweep_dir}")
    jobs = load_sweep(sweep_dir)
    warnings = [
        f"{j.path.relative_to(sweep_dir) if j.path != sweep_dir else '.'}: {j.problem}"
        for j in jobs
        if j.problem
    ]
    if not any(j.summary for j in jobs):
        raise NsaeError(
            f"no finished job in {sweep_dir} (no readable metrics.json); "
            f"{len(jobs)} job director{'y' if len(jobs) == 1 else 'ies'} found"
        )
    for axis, values, idx in (
        ("sae_type", SAE_TYPES, 0),
        ("normalization_method", NORMS, 1),
        ("coeff", COEFFS, 2),
    ):
        absent = [v for v in values if not any(j.condition[idx] == v for j in jobs)]
        if absent:
            warnings.append(f"sweep: no {axis}={','.join(absent)} jobs; those cells read 'missing'")
    out = sweep_dir / "report_files"
    out.mkdir(exist_ok=True)
    groups = by_condition(jobs)
    reps = {cond: representative(runs) for cond, runs in groups.items()}
    shown = [r for r in reps.values() if r is not None]

    blocks, table = headline(groups, reps)
    blocks.insert(0, Heading(f"nsae sweep report: {sweep_dir.name}", 1))
    blocks.insert(
        1,
        Text(
            f"{len(jobs)} jobs, {sum(1 for j in jobs if j.summary)} finished. "
            "Compare conditions at matched L0, not at equal alpha."
        ),
    )
    if warnings:
        blocks.append(Heading("Problems"))
        blocks.append(Table(["job", "problem"], [w.split(": ", 1) for w in warnings]))

    blocks.append(Heading("Per layer"))
    for metric, name in (
        ("l0", "mean L0"),
        ("feature_suppression", "feature suppression"),
        ("reconstruction_score", "reconstruction score"),
    ):
        if all(metric in r.summary["metrics"] for r in shown):
            plots.by_layer(shown, metric, name, out / f"{metric}_by_layer.png")
            blocks.append(Image(f"report_files/{metric}_by_layer.png", f"{name} by layer"))
    plots.l0_vs_norm(shown, out / "l0_vs_norm.png")
    blocks.append(
        Image(
            "report_files/l0_vs_norm.png",
            "L0 against the layer's mean input norm (least-squares line, Pearson r)",
        )
    )

    curves = {f"{c[0]}/{c[1]}/{c[2]}": [j for j in runs if j.summary] for c, runs in groups.items()}
    curves = {k: v for k, v in curves.items() if len(v) >= 2}
    if curves:
        blocks.append(Heading("Pareto curves (alpha sub-grids)"))
        for metric, name in (("reconstruction_score", "reconstruction score"), ("fvu", "FVU")):
            plots.pareto(curves, metric, name, out / f"pareto_{metric}.png")
            blocks.append(Image(f"report_files/pareto_{metric}.png", f"mean L0 against {name}"))
        blocks.extend(matched_l0(curves))
    blocks.extend(dictionary_stats(reps, out))

    md, page = sweep_dir / "report.md", sweep_dir / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"nsae report: {sweep_dir.name}"))
    (sweep_dir / "report.json").write_text(
        json.dumps(
            {"table": table, "warnings": warnings, "jobs": {str(j.path): j.label for j in jobs}},
            indent=2,
        )
        + "\n"
    )
    return md, page, warnings


def publish_wandb(md: Path) -> None:
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise NsaeError(
            f"W&B Reports need an online W&B (WANDB_MODE="
            f"{os.environ['WANDB_MODE']}); wrote {md.name} and report.html only"
        )
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise NsaeError(
            "--wandb needs the wandb-workspaces package: pip install wandb-workspaces"
        ) from None
    report = wr.Report(
        project=os.environ.get("WANDB_PROJECT", "nsae"),
        title=f"nsae: {md.parent.name}",
        blocks=[wr.MarkdownBlock(text=md.read_text())],
    )
    report.save()
    print(f"W&B report: {report.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsae.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--wandb", action="store_true", help="also publish as a W&B Report")
    args = parser.parse_args(argv)
    try:
        md, page, warnings = build(args.sweep_dir)
        for w in warnings:
            print(f"nsae.report: warning: {w}", file=sys.stderr)
        print(f"wrote {md} and {page}")
        if args.wandb:
            publish_wandb(md)
    except NsaeError as err:
        print(f"nsae.report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
