"""The HTML pages: index.html, layer_<i>.html per layer and, with --compare,
compare_layer_<i>.html (the other run's feature pages in other/). Self-contained: inline
CSS, JS and SVG, data as embedded JSON; nothing is fetched."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nsae.features.pairing import Pairing
from nsae.features.template import COMMON_JS, COMPARE_JS, CSS, INDEX_JS, LAYER_JS

e = html.escape


def page(title: str, body: str, data: Any, script: str) -> str:
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{CSS}</style></head><body>{body}"
        f"<script type='application/json' id='data'>{payload}</script>"
        f"<script>{COMMON_JS}{script}</script></body></html>\n"
    )


def svg_hist(
    values: list[float] | np.ndarray, title: str, xlabel: str, bins: int = 40, log_y: bool = False
) -> str:
    """A static histogram as inline SVG (values that are not finite are left out)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    W, H, pad = 440, 150, 22
    if not len(v):
        return f"<figure><figcaption>{e(title)}: no values</figcaption></figure>"
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-9 * max(1.0, abs(lo)):  # one value: bins around it
        lo, hi = lo - 0.5, lo + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    height = np.log10(counts + 1.0) if log_y else counts.astype(float)
    top = max(float(height.max()), 1e-9)
    bw = W / bins
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{H - pad - (H - 2 * pad) * h / top:.1f}' "
        f"width='{max(bw - 1, 1):.1f}' height='{(H - 2 * pad) * h / top:.1f}' fill='#47a'>"
        f"<title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c}</title></rect>"
        for i, (c, h) in enumerate(zip(counts, height, strict=True))
    )
    axis = (
        f"<text x='0' y='{H - 6}' font-size='11'>{lo:.4g}</text>"
        f"<text x='{W}' y='{H - 6}' font-size='11' text-anchor='end'>{hi:.4g}</text>"
        f"<text x='{W / 2}' y='{H - 6}' font-size='11' text-anchor='middle'>{e(xlabel)}"
        f"</text><text x='0' y='12' font-size='11'>max count {int(counts.max())}"
        f"{' (log scale)' if log_y else ''}</text>"
    )
    return (
        f"<figure><svg viewBox='0 0 {W} {H}' width='{W}' height='{H}' role='img'>"
        f"{bars}{axis}</svg><figcaption>{e(title)}</figcaption></figure>"
    )


def first_feature(view: dict[str, Any]) -> int:
    """The feature a layer page opens on: the densest."""
    dens = [d or 0 for d in view["density"]]
    return int(np.argmax(dens)) if dens else 0


def layer_page(
    view: dict[str, Any],
    meta: dict[str, Any],
    vocab: list[str],
    extra: dict[str, Any] | None = None,
) -> str:
    """One layer's feature pages: one feature at a time, chosen by #<feature>."""
    L = view["layer"]
    head = (
        f"<p><a href='{meta['index']}'>index</a> &middot; {e(meta['label'])}, layer {L}: "
        f"{view['n_features']} features, {meta['sae_type']} SAE on {e(meta['model'])} "
        f"({e(meta['hook'])}); statistics over {e(meta['tokens'])}.</p>"
        "<p>feature <input id='goto' type='number' min='0' style='width:7em'> "
        "<button id='prev'>&larr;</button> <button id='next'>&rarr;</button></p>"
        "<div id='card'></div>"
    )
    data = {
        **view,
        "vocab": vocab if view["contexts"] or "up" in view else [],
        "first": first_feature(view),
        **(extra or {}),
    }
    title = f"{meta['label']} layer {L} features"
    return page(title, f"<h1>{e(title)}</h1>{head}", data, LAYER_JS)


def _dead(view: dict[str, Any]) -> int:
    return sum(c == 0 for c in view["count"])


def index_page(
    views: list[dict[str, Any]],
    meta: dict[str, Any],
    tokens: dict[int, Any],
    compares: dict[int, str],
) -> str:
    """Every layer's table, histograms and the token search."""
    parts = [
        f"<h1>Features of {e(meta['label'])}</h1>",
        f"<p>{meta['sae_type']} SAE on {e(meta['model'])} ({e(meta['hook'])}); "
        f"statistics over {e(meta['tokens'])}. Run: <code>{e(meta['path'])}</code></p>",
        "<h2>Search by token</h2>",
    ]
    if tokens:
        parts.append(
            "<p>Which features fire on a token? (the features whose top contexts' activating "
            "token is it, e.g. <code>LORD</code>) <input id='search' placeholder='token or "
            "word' size='24'> <span id='nresults' class='note'></span></p><ul id='results'></ul>"
        )
    else:
        parts.append(
            "<p class='note'>No token search: this source has no tokens (a synthetic source), "
            "so there are no contexts. <input id='search' type='hidden'>"
            "<span id='nresults'></span></p><ul id='results'></ul>"
        )
    data_layers = []
    for v in views:
        L = v["layer"]
        alive = v["n_features"] - _dead(v)
        nn1 = [row[0] if row else None for row in v["nn_cos"]]
        dens = [math.log10(d) for d in v["density"] if d]
        links = f"<a href='layer_{L}.html'>feature pages</a>"
        if L in compares:
            links += f" &middot; <a href='{compares[L]}'>comparison</a>"
        parts += [
            f"<h2 id='layer_{L}'>Layer {L}</h2><p>{links}. {alive} of {v['n_features']} "
            f"features fire on these tokens, {v['n_features'] - alive} dead.</p>",
            "<div class='grid'>",
            svg_hist(
                v["dec_norm"],
                "decoder norm (large-norm 'pillar' vectors on the right)",
                "||W_dec_j||",
                log_y=True,
            ),
            svg_hist(
                nn1,
                "nearest-neighbour decoder cosine (near-duplicates near 1)",
                "max_k cos(d_j, d_k)",
                log_y=True,
            ),
            svg_hist(dens, "log10 firing density (alive features)", "log10 density"),
            "</div>",
            f"<p>status <select id='st{L}'><option>all</option><option>alive</option>"
            f"<option>dead</option></select> min density <input id='min{L}' type='number' "
            f"step='any' value='0' style='width:7em'></p><div id='t{L}'></div>",
        ]
        data_layers.append(
            {
                "layer": L,
                "href": f"layer_{L}.html",
                "density": v["density"],
                "max": v["max"],
                "dec_norm": v["dec_norm"],
                "nn_cos": nn1,
                "count": v["count"],
                "tokens": tokens.get(L, {}),
            }
        )
    return page(f"features: {meta['label']}", "".join(parts), {"layers": data_layers}, INDEX_JS)


def compare_page(
    layer: int,
    p: Pairing,
    meta: dict[str, Any],
    other: dict[str, Any],
    dens_a: list[Any],
    dens_b: list[Any],
) -> str:
    """Pairs of this run's and the other run's features (optimal one-to-one by decoder
    cosine), their cosines, the features with no counterpart, side by side pages."""
    rows, cols, cos = p.pairs()
    un_a, un_b = p.unmatched_a(), p.unmatched_b()
    left, right = f"layer_{layer}.html", f"other/layer_{layer}.html"

    def link(href: str, j: int) -> str:
        return f"<a href='{href}#{j}'>{j}</a>"

    order = np.argsort(cos, kind="stable")
    trs = "".join(
        f"<tr><td>{link(left, int(rows[i]))}</td><td>{link(right, int(cols[i]))}</td>"
        f"<td>{cos[i]:.4f}</td><td>{dens_a[rows[i]] or 0:.3g}</td><td>{dens_b[cols[i]] or 0:.3g}"
        f"</td><td><a href='#' class='pair' data-a='{rows[i]}' data-b='{cols[i]}'>side by side"
        "</a></td></tr>"
        for i in order
    )
    body = (
        f"<h1>Layer {layer}: {e(meta['label'])} vs {e(other['label'])}</h1>"
        f"<p><a href='index.html'>index</a>. Features paired one-to-one by decoder cosine "
        f"(the assignment maximising the summed cosine; scipy linear_sum_assignment). "
        f"{len(rows)} pairs, mean cosine {np.mean(cos) if len(cos) else float('nan'):.4f}, "
        f"median {np.median(cos) if len(cos) else float('nan'):.4f}. A feature has no "
        f"counterpart when it is unpaired or its pair's cosine is below {p.threshold}: "
        f"{len(un_a)} of {len(p.cos_a)} in {e(meta['label'])}, {len(un_b)} of "
        f"{len(p.cos_b)} in {e(other['label'])} (<code>{e(other['path'])}</code>).</p>"
        + svg_hist(cos, "cosine of the paired decoder directions", "cosine", log_y=True)
        + "<h2 id='frames'>Side by side</h2><p class='note'>a pair's 'side by side' link "
        "opens both feature pages here</p><div class='frames'>"
        f"<iframe id='left' name='left' src='{left}'></iframe>"
        f"<iframe id='right' name='right' src='{right}'></iframe></div>"
        + "<h2>Pairs, lowest cosine first</h2><div class='scroll'><table><tr>"
        f"<th>{e(meta['label'])}</th><th>{e(other['label'])}</th><th>cosine</th>"
        f"<th>density</th><th>density</th><th></th></tr>{trs}</table></div>"
        + f"<h2>No counterpart in {e(other['label'])}</h2><p>"
        + (", ".join(link(left, int(j)) for j in un_a) or "none")
        + "</p>"
        + f"<h2>No counterpart in {e(meta['label'])}</h2><p>"
        + (", ".join(link(right, int(j)) for j in un_b) or "none")
        + "</p>"
    )
    return page(f"compare layer {layer}", body, {"left": left, "right": right}, COMPARE_JS)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
