"""The results table: every cell (condition x alpha) of a section, seeds aggregated."""

from __future__ import annotations

from typing import Any

from nsae.report.document import Block, Heading, Table, Text
from nsae.report.groups import Cell, Section, label
from nsae.report.sections import Ctx, fmt, fmt_stat, stat_dict

HEADLINE = {
    "l0": "L0",
    "explained_variance": "expl. var.",
    "feature_suppression": "feat. suppr.",
    "reconstruction_score": "recon. score",
    "kl": "KL",
    "l1_l0_ratio": "L1/L0",
    "l0_cv": "L0 CV (layers)",
}


def status(cell: Cell) -> str:
    """'' for a cell with numbers, else why it has none; skipped cells say so."""
    if cell.skipped:
        return "= alpha (k = 0)"
    if cell.done:
        return ""
    states = sorted({r.status for r in cell.runs})
    if "failed" in states:
        errors = sorted({r.problem or "" for r in cell.runs if r.status == "failed"})
        return "FAILED: " + "; ".join(e.removeprefix("failed: ") for e in errors)
    return "/".join(states)


def cell_record(cell: Cell) -> dict[str, Any]:
    sae, norm, coeff, k = cell.condition
    return {
        "condition": {"sae_type": sae, "normalization_method": norm, "coeff": coeff, "k": k},
        "alpha": cell.alpha,
        "sae_k": cell.sae_k,
        "scale": cell.scale,
        "status": status(cell) or "done",
        "seeds": sorted(r.seed for r in cell.done),
        "sources": cell.sources,
        "metrics": {m: stat_dict(cell.stat(m), cell.sources) for m in HEADLINE},
    }


def build(section: Section, ctx: Ctx) -> list[Block]:
    rows, records = [], []
    for cond, cells in section.cells.items():
        for cell in cells:
            records.append(cell_record(cell))
            note = status(cell)
            vals = [fmt_stat(cell.stat(m)) for m in HEADLINE] if cell.done else [""] * len(HEADLINE)
            point = fmt(cell.alpha) if cell.sae_k is None else f"k={cell.sae_k}"
            rows.append([label(cond), point, f"{cell.scale:g}", note or "done", *vals])
    ctx.record["cells"] = records
    return [
        Heading("Results", 3),
        Text(
            "Each row is one condition at one alpha; numbers are means over layers, "
            "mean ± 95% CI over seeds (n). A beta cell with k = 0 is its alpha cell by "
            "construction (not trained): it shows the alpha cell's numbers, marked "
            "'= alpha (k = 0)'."
        ),
        Table(["condition", "alpha / k", "scale", "status", *HEADLINE.values()], rows),
    ]
