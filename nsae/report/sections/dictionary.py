"""Dictionary statistics from each default-alpha cell's exported weights, per layer:
decoder row norms, each feature's nearest-neighbour max |cos| (exact, in chunks), features
aligned with the mean activation direction, and the feature-density histogram."""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors.numpy import load_file

from nsae.report import plots
from nsae.report.document import Block, Table
from nsae.report.groups import Section, label
from nsae.report.runs import Run
from nsae.report.sections import Ctx, fmt

ALIGNED = 0.9  # a feature is aligned with the mean direction if cos(W_dec[j], b_dec) > 0.9


def nn_max_cos(W_dec_MD: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each decoder row j: max over i != j of |cos(W_dec[i], W_dec[j])| (exact)."""
    u_MD = W_dec_MD / np.maximum(np.linalg.norm(W_dec_MD, axis=1, keepdims=True), 1e-12)
    out_M = np.empty(len(u_MD))
    for s in range(0, len(u_MD), chunk):
        c_CM = np.abs(u_MD[s : s + chunk] @ u_MD.T)
        c_CM[np.arange(len(c_CM)), np.arange(s, s + len(c_CM))] = -np.inf
        out_M[s : s + chunk] = c_CM.max(axis=1)
    return out_M


def mean_cos(W_dec_MD: np.ndarray, b_dec_D: np.ndarray) -> np.ndarray:
    """cos(W_dec[j], b_dec) per feature: b_dec starts at the activations' mean (or geometric
    median) and is trained with the SAE, so it stands for the mean activation direction."""
    n_M = np.linalg.norm(W_dec_MD, axis=1) * max(float(np.linalg.norm(b_dec_D)), 1e-12)
    return (W_dec_MD @ b_dec_D) / np.maximum(n_M, 1e-12)


def layer_stats(run: Run, layer: int) -> dict[str, Any] | None:
    path = (run.origin or run.path) / f"layer_{layer}" / "sae_weights.safetensors"
    if not path.is_file():
        return None
    w = load_file(str(path))
    W_dec_MD = w["W_dec"].astype(np.float64)
    return {
        "norms": np.linalg.norm(W_dec_MD, axis=1),
        "nn": nn_max_cos(W_dec_MD),
        "mean_cos": mean_cos(W_dec_MD, w["b_dec"].astype(np.float64)),
    }


def _spread(v: np.ndarray) -> str:
    return f"{np.median(v):.3g} [{v.min():.3g}, {v.max():.3g}]"


def alive(run: Run, layer: int) -> float | None:
    h = (run.summary or {}).get("feature_density_histogram", {}).get(f"layer_{layer}")
    n = (run.summary or {}).get("n_features")
    return None if not h or not n else 1 - h["never_fired"] / n


def build(section: Section, ctx: Ctx) -> list[Block]:
    rows, norms, nns, dens, record = [], {}, {}, {}, {}
    unit_norm = []
    for cond in section.cells:
        cell = section.representative(cond)
        run = min(cell.done, key=lambda r: r.seed) if cell else None
        if run is None:
            continue
        name = label(cond)
        for layer in run.layers():
            s = layer_stats(run, layer)
            a = alive(run, layer)
            h = run.summary.get("feature_density_histogram", {}).get(f"layer_{layer}")
            if h:
                e = np.asarray(h["log10_edges"])
                dens.setdefault(f"layer {layer}", {})[name] = ((e[:-1] + e[1:]) / 2, h["counts"])
            if s is None:
                continue
            is_unit = bool(np.abs(s["norms"] - 1).max() < 1e-3)
            if is_unit:
                unit_norm.append(name)
            else:
                norms.setdefault(f"layer {layer}", {})[name] = s["norms"]
            nns.setdefault(f"layer {layer}", {})[name] = s["nn"]
            n_aligned = int((s["mean_cos"] > ALIGNED).sum())
            rec = {
                "source": run.rel,
                "alive_fraction": a,
                "n_aligned_with_mean": n_aligned,
                "decoder_norm_median": float(np.median(s["norms"])),
                "nn_max_cos_median": float(np.median(s["nn"])),
                "nn_max_cos_frac_above_0.9": float((s["nn"] > 0.9).mean()),
            }
            record.setdefault(name, {})[f"layer_{layer}"] = rec
            rows.append(
                [
                    name,
                    str(layer),
                    fmt(a),
                    "all 1" if is_unit else _spread(s["norms"]),
                    fmt(rec["nn_max_cos_median"]),
                    fmt(rec["nn_max_cos_frac_above_0.9"]),
                    str(n_aligned),
                    run.rel,
                ]
            )
    blocks = ctx.part(
        "dictionary",
        record,
        "Dictionary",
        "Per default-alpha cell (lowest seed), per layer: alive fraction (fired at least "
        "once in the evaluation), decoder row norms (median [min, max]), each feature's "
        "nearest-neighbour max |cos| with any other decoder row of the layer (exact), and "
        f"the number of features with cos > {ALIGNED} to the SAE's trained b_dec, which "
        "is initialised at the activations' mean and stands for the mean direction."
        + (
            f" Decoder norms of {', '.join(sorted(set(unit_norm)))} are all 1 (unit-norm "
            "constraint), so they are not plotted."
            if unit_norm
            else ""
        )
        + " Every feature of a run, one by one (top contexts, the tokens it promotes, its "
        "nearest neighbours; two runs' features paired): `python -m nsae.features <run "
        "directory>`, for the run directory of the table's last column.",
    )
    if rows:
        blocks.append(
            Table(
                [
                    "condition",
                    "layer",
                    "alive",
                    "decoder norm",
                    "NN max |cos| median",
                    "NN max |cos| > 0.9",
                    f"cos(b_dec) > {ALIGNED}",
                    "run directory",
                ],
                rows,
            )
        )
    for key, data, ylabel, log in (
        ("decoder_norms", norms, "decoder row norm (log)", True),
        ("nn_max_cos", nns, "nearest-neighbour max |cos|", False),
    ):
        if data:
            blocks += ctx.figure(
                key, ylabel, lambda p, d=data, y=ylabel, lg=log: plots.boxes(d, y, p, logy=lg)
            )
    if dens:
        blocks += ctx.figure(
            "feature_density",
            "feature density histogram (log10 frequency)",
            lambda p: plots.panels(dens, "log10 firing frequency", "number of features", p),
        )
    return blocks
