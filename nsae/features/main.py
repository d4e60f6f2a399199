"""The command's pipeline: open the run(s), check them, one feature pass, the pages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from nsae.errors import NsaeError
from nsae.features import pages
from nsae.features.build import LayerJob, Options, collect, layer_view, token_index
from nsae.features.pairing import pair
from nsae.features.runs import (
    RunRef,
    check_comparable,
    load_layer,
    open_run,
    parse_layers,
    select_layers,
    source_and_data,
)
from nsae.features.stream import LMStream, open_stream
from nsae.features.vocab import token_strings


def _meta(run: RunRef, layer: int, tokens: str, index: str) -> dict[str, Any]:
    cfg = run.cfgs[layer]
    return {
        "label": run.label,
        "path": str(run.path),
        "model": run.model_name,
        "hook": str(cfg.get("hook_name", run.hook_site)),
        "tokens": tokens,
        "index": index,
        "sae_type": (cfg.get("nsae") or {}).get("sae_type", cfg.get("architecture", "?")),
    }


def _partner(p: Any, side: str, href: str, label: str) -> dict[str, Any]:
    partner, cos = (p.partner_a, p.cos_a) if side == "a" else (p.partner_b, p.cos_b)
    return {
        "partner": partner.tolist(),
        "partner_href": href,
        "partner_label": label,
        "partner_cos": [None if np.isnan(c) else round(float(c), 5) for c in cos],
        "threshold": p.threshold,
    }


def run(args: argparse.Namespace) -> Path:
    main_run = open_run(args.run_dir)
    wanted = parse_layers(args.layers) if args.layers else None
    layers = select_layers(main_run, wanted)
    other = None
    if args.compare is not None:
        other = open_run(args.compare)
        if other.path.resolve() == main_run.path.resolve():
            other.label = f"{other.label} (again)"
        check_comparable(main_run, other, layers)
    source, data = source_and_data(main_run, args.model)
    seed = int(main_run.config.get("seed", 0)) if main_run.config is not None else 0
    jobs = [
        LayerJob("run", layer, slot, load_layer(main_run, layer))
        for slot, layer in enumerate(layers)
    ]
    if other is not None:
        jobs += [
            LayerJob("other", layer, slot, load_layer(other, layer))
            for slot, layer in enumerate(layers)
        ]
    stream = open_stream(source, data, layers, seed, args.tokens, args.split)
    if isinstance(stream, LMStream):
        width = stream.model.config.hidden_size
        bad = [j for j in jobs if j.sae.d_model != width]
        if bad:
            raise NsaeError(
                f"layer {bad[0].layer}'s SAE takes d_in {bad[0].sae.d_model}, but the source "
                f"model {source.name} has width {width}; valid: the model the SAE was trained on"
            )
    opt = Options(k=args.top_k)
    collect(stream, jobs, opt)
    vocab = token_strings(stream.tokenizer) if stream.tokenizer is not None else []
    out = args.out or (main_run.path / "features")
    tokens = stream.describe()
    views: dict[tuple[str, int], dict[str, Any]] = {}
    for job in jobs:
        truth = stream.dict_LFD[job.slot] if hasattr(stream, "dict_LFD") else None
        views[job.key, job.layer] = layer_view(job, opt, stream.model, truth)
    compares: dict[int, str] = {}
    for layer in layers:
        view = views["run", layer]
        extra = None
        if other is not None:
            p = pair(
                jobs[layers.index(layer)].sae.W_dec_LMD[0].detach(),
                jobs[len(layers) + layers.index(layer)].sae.W_dec_LMD[0].detach(),
                args.match_threshold,
            )
            extra = _partner(p, "a", f"other/layer_{layer}.html", other.label)
            other_view = views["other", layer]
            pages.write(
                out / "other" / f"layer_{layer}.html",
                pages.layer_page(
                    other_view,
                    _meta(other, layer, tokens, "../index.html"),
                    vocab,
                    _partner(p, "b", f"../layer_{layer}.html", main_run.label),
                ),
            )
            name = f"compare_layer_{layer}.html"
            pages.write(
                out / name,
                pages.compare_page(
                    layer,
                    p,
                    _meta(main_run, layer, tokens, "index.html"),
                    {"label": other.label, "path": str(other.path)},
                    view["density"],
                    other_view["density"],
                ),
            )
            compares[layer] = name
        meta = _meta(main_run, layer, tokens, "index.html")
        pages.write(out / f"layer_{layer}.html", pages.layer_page(view, meta, vocab, extra))
    token_maps = (
        {layer: token_index(views["run", layer], vocab) for layer in layers} if vocab else {}
    )
    meta = _meta(main_run, layers[0], tokens, "index.html")
    index = out / "index.html"
    pages.write(
        index, pages.index_page([views["run", la] for la in layers], meta, token_maps, compares)
    )
    return index
