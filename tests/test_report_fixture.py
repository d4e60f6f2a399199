"""A writer of hand-built run directories, exactly in the layout nsae.train writes (config.yaml,
metrics.json, norm_stats.json, logs/metrics.csv, layer_<i>/ weights, skipped.json,
failed.json), with known numbers; and checks that the report reads them back as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import save_file

from nsae.report.runs import load_sweep

LAYERS = (0, 1)
D, M = 4, 8
METRICS = (
    "l0", "l1", "l1_l0_ratio", "mse", "fvu", "explained_variance", "cosine",
    "feature_suppression", "relative_reconstruction_bias", "norm_l0_corr", "l0_norm_slope",
    "dead_fraction", "reconstruction_score", "kl", "ce_clean", "ce_recon", "ce_zero",
)  # fmt: skip


def config(
    sae_type: str = "none",
    norm: str = "none",
    coeff: str = "alpha",
    scale: float = 1.0,
    seed: int = 0,
    alpha: float | None = None,
    k: float | None = None,
    **over: Any,
) -> dict[str, Any]:
    """A resolved config; `over` sets dotted keys, e.g. {"trainer.max_steps": 200}."""
    sae: dict[str, Any] = {"type": sae_type, "expansion_factor": 2, "init_b_dec": "mean"}
    if sae_type == "normalized_sae":
        sae["noise_std"] = 0.1
    cfg: dict[str, Any] = {
        "seed": seed,
        "resume": False,
        "sae": sae,
        "loss": {"normalization_method": norm},
        "coeff": {
            "mode": coeff,
            "alpha": alpha if alpha is not None else scale,
            "scale": scale,
            "k": k,
            "default_alpha": {"none": {"none": 1.0}},
        },
        "source": {"name": "/x/kjv-gpt2", "hook_site": "resid_post", "layers": "all"},
        "data": {"batch_size": 64, "context_size": 16},
        "trainer": {"max_steps": 100, "val_check_interval": 50},
        "optim": {"lr": 0.003},
        "metrics": {"splice": True},
        "logger": {"csv": {"save_dir": f"/tmp/run_{seed}_{scale}"}},  # bookkeeping: differs
    }
    for key, v in over.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return cfg


def per_layer(values: float | list[float]) -> dict[str, float]:
    vals = [values] * len(LAYERS) if isinstance(values, int | float) else list(values)
    return {**{f"layer_{i}": float(v) for i, v in zip(LAYERS, vals, strict=True)},
            "mean": float(np.mean(vals))}  # fmt: skip


def write_run(
    sweep: Path,
    name: str,
    cfg: dict[str, Any],
    values: dict[str, float | list[float]] | None = None,
    layer_norms: tuple[float, ...] | None = None,
) -> Path:
    """A finished run: every metric is 0.5 on every layer unless `values` says otherwise
    (a float: all layers; a list: per layer). l0_cv comes from values["l0_cv"] (else 0.1);
    `layer_norms`: each layer's mean ||x|| in norm_stats.json (else 10 on every layer)."""
    run = sweep / name
    (run / "logs").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    vals = {m: 0.5 for m in METRICS} | {"l0": 10.0} | dict(values or {})
    metrics = {m: per_layer(v) for m, v in vals.items() if m in METRICS}
    c = cfg["coeff"]
    summary = {
        "condition": {"sae_type": cfg["sae"]["type"], "normalization_method":
                      cfg["loss"]["normalization_method"], "coeff": c["mode"],
                      "alpha": c["alpha"], "scale": c["scale"], "k": c["k"]},
        "seed": cfg["seed"],
        "provenance": {"nsae_version": "0.1.0", "git_commit": "abc1234",
                       "source": "embedded:kjv-gpt2", "dataset": "embedded:kjv",
                       "hook_site": "resid_post", "steps": 100, "batch_size": 64,
                       "train_tokens": 6400, "unique_train_tokens": 3200, "epochs": 2.0},
        "layers": list(LAYERS), "n_features": M, "steps": 100, "train_tokens": 6400,
        "eval_tokens": 512, "coefficients": {f"layer_{i}": c["alpha"] for i in LAYERS},
        "metrics": metrics,
        "train_split_metrics": {"l0": per_layer(vals.get("train_l0", 11.0)),
                                "explained_variance": per_layer(0.6)},
        "by_norm_decile": {f"layer_{i}": [
            {"bin": b, "lo": b, "hi": b + 1, "count": 5, "mean_norm": b + 0.5, "l0": 2.0 + b,
             "l1": 1.0, "nmse": 0.1 * b, "cosine": 0.9, "feature_suppression": 0.8}
            for b in range(10)] for i in LAYERS} | {"position_0": {f"layer_{i}": {
                "count": 4, "mean_norm": 80.0, "l0": 50.0, "l1": 1.0, "nmse": 0.9,
                "cosine": 0.5, "feature_suppression": 0.6} for i in LAYERS}},
        "l0_norm_slope": metrics["l0_norm_slope"],
        "feature_density_histogram": {f"layer_{i}": {
            "log10_edges": list(np.linspace(-6, 0, 13)), "counts": [0] * 11 + [6],
            "never_fired": 2} for i in LAYERS},
        "cross_layer": {"l0_cv": float(vals.get("l0_cv", 0.1)), "norm_l0_corr": 0.3},
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(summary))
    stats = {f"layer_{i}": {
        "mean": layer_norms[j] if layer_norms else 10.0, "std": 3.0, "q01": 4.0,
        "q05": 5.0, "q25": 8.0, "q50": 10.0, "q75": 12.0,
        "q95": 15.0, "q99": 25.0 if i else 15.0, "max": 90.0, "n_tokens": 512,
        "position_0": {"mean": 80.0 if i else 12.0, "n_tokens": 32}, "rest_mean": 10.0,
        "decile_edges": list(range(1, 10)),
        "histogram": {"edges": list(np.linspace(0, 100, 41)), "counts": [3] * 40}}
        for j, i in enumerate(LAYERS)}  # fmt: skip
    (run / "norm_stats.json").write_text(json.dumps({"layers": stats, "coefficients": {}}))
    steps = list(range(0, 101, 10))
    lines = ["step,train/loss,train/l0/mean,train/fvu/mean,val/l0/mean"]
    lines += [f"{s},1.0,{10 + 100 / (s + 1)},{0.5},{'' if s % 50 else 10}" for s in steps]
    (run / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(cfg["seed"])
    for i in LAYERS:
        (run / f"layer_{i}").mkdir()
        W_dec = rng.normal(size=(M, D)).astype(np.float32)
        if cfg["sae"]["type"] == "none":
            W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
        weights = {"W_enc": W_dec.T.copy(), "b_enc": np.zeros(M, np.float32), "W_dec": W_dec,
                   "b_dec": np.ones(D, np.float32)}  # fmt: skip
        save_file(weights, str(run / f"layer_{i}" / "sae_weights.safetensors"))
        (run / f"layer_{i}" / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": M}))
    return run


def write_skipped(sweep: Path, name: str, cfg: dict[str, Any], same_as: str) -> Path:
    run = sweep / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "skipped.json").write_text(json.dumps({"reason": "k = 0", "same_as": same_as}))
    return run


def write_failed(sweep: Path, name: str, cfg: dict[str, Any], error: str | None) -> Path:
    """A failed run (error given) or, with error=None, one that did not finish."""
    run = sweep / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if error is not None:
        (run / "failed.json").write_text(json.dumps({"error": error}))
    return run


def test_written_runs_read_back(tmp_path: Path) -> None:
    write_run(tmp_path, "a", config(seed=3), {"l0": [4.0, 8.0]})
    write_skipped(tmp_path, "b", config(coeff="beta"), "a")
    write_failed(tmp_path, "c", config(scale=2.0), "CUDA out of memory")
    write_failed(tmp_path, "d", config(scale=4.0), None)
    runs = {r.rel: r for r in load_sweep(tmp_path)}
    assert sorted(runs) == ["a", "b", "c", "d"]
    assert [runs[k].status for k in "abcd"] == ["done", "skipped", "failed", "unfinished"]
    assert runs["a"].value("l0", 1) == 8.0 and runs["a"].value("l0") == 6.0
    assert runs["a"].seed == 3 and runs["b"].k == 0.0
    assert runs["b"].value("l0", 0) == 4.0  # the alpha job's numbers
    assert runs["c"].problem == "failed: CUDA out of memory"
    assert runs["a"].value("train_split/l0", 0) == 11.0 and runs["a"].value("l0_cv") == 0.1
