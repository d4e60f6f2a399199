"""The feature pass and what the pages show of each layer, as JSON-ready dicts.

`collect` runs one streaming pass: each batch of contexts goes through the LM once (all
layers), each SAE (this run's and, with --compare, the other run's) encodes its layer's
slice, and each (run, layer)'s `FeatureStats` takes the activations. `layer_view` turns a
layer's statistics and decoder into what its pages embed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nsae.features.collect import HIST_EDGES, FeatureStats, Kept
from nsae.features.pairing import ground_truth_match, nearest_neighbours
from nsae.features.stream import LMStream, SyntheticStream
from nsae.features.vocab import logit_lens
from nsae.progress import progress
from nsae.saes import SAE

ENCODE_ELEMENTS = 1 << 25  # f [tokens, F] per encode: 128 MiB of float32
N_BANDS = 3  # lower-quantile bands of the sampled activations: [0, 1/4), [1/4, 1/2), [1/2, 3/4)
PER_BAND = 3


@dataclass
class Options:
    k: int = 10
    n_samples: int = 24
    before: int = 10
    after: int = 4
    n_neighbours: int = 5
    n_lens: int = 10


@dataclass
class LayerJob:
    """One (run, layer) of the pass: its SAE, its index among the harvested layers."""

    key: str
    layer: int
    slot: int
    sae: SAE
    stats: FeatureStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def contexts_per_batch(n_features: int, context_size: int) -> int:
    return int(max(1, min(64, ENCODE_ELEMENTS // (context_size * n_features))))


@torch.no_grad()
def collect(stream: LMStream | SyntheticStream, jobs: list[LayerJob], opt: Options) -> None:
    """One pass over the stream's tokens; fills every job's `stats`."""
    for job in jobs:
        if isinstance(stream, SyntheticStream):
            job.stats = FeatureStats(job.sae.n_features, opt.k, opt.n_samples, 0, 0)
        else:
            job.stats = FeatureStats(
                job.sae.n_features, opt.k, opt.n_samples, opt.before, opt.after
            )
    widest = max(job.sae.n_features for job in jobs)
    T = stream.context_size if isinstance(stream, LMStream) else stream.batch_tokens
    per_batch = contexts_per_batch(widest, T)
    bar = progress(stream.total, "features", "tokens")
    first = 0
    for batch in stream.batches(per_batch):
        C, T, _, D = batch.x_CTLD.shape
        if isinstance(stream, SyntheticStream):  # one batch of tokens: each token a context
            C, T = C * T, 1
        for job in jobs:
            x_ND = batch.x_CTLD[:, :, job.slot].reshape(-1, D)
            step = max(1, ENCODE_ELEMENTS // job.sae.n_features // T) * T
            for start in range(0, len(x_ND), step):
                f_NF = job.sae.encode(x_ND[start : start + step, None])[:, 0]
                c0, n_c = start // T, len(f_NF) // T
                ids = None if batch.ids_CT is None else batch.ids_CT[c0 : c0 + n_c]
                keep = None if batch.keep_CT is None else batch.keep_CT[c0 : c0 + n_c]
                job.stats.update(f_NF.view(n_c, T, -1), ids, first + start, keep)  # type: ignore[union-attr]
        first += C * T
        bar.update(C * T)
    bar.close()


def _sig(x: Tensor | np.ndarray | float, digits: int = 4) -> np.ndarray:
    """Rounded to `digits` significant digits (any shape; non-finite values kept)."""
    a = np.array(x, dtype=np.float64)
    out = a.copy()
    nz = np.isfinite(a) & (a != 0)
    mag = 10 ** np.floor(np.log10(np.abs(a[nz])))
    out[nz] = np.round(a[nz] / mag, digits - 1) * mag
    return out


def _r(x: Tensor | np.ndarray, digits: int = 4) -> list[Any]:
    """A 1-D array rounded (`_sig`) as a JSON list (nan and inf as None)."""
    return [v if np.isfinite(v) else None for v in _sig(x, digits).tolist()]


def _contexts(kept: Kept, before: int) -> list[list[Any]]:
    """Per feature, its kept entries as [value, token, ids, acts, centre] (the window's
    tokens outside the context dropped; centre: the activating token's place in it)."""
    value, token = _sig(kept.value).tolist(), kept.token.tolist()
    ids, ok = kept.window_ids.tolist(), kept.window_ok.tolist()
    acts = _sig(kept.window_acts, 3).tolist()
    out: list[list[Any]] = []
    for j, row in enumerate(token):
        entries = []
        for r, tok in enumerate(row):
            if tok < 0:
                break
            mask = ok[j][r]
            first = mask.index(True)
            last = len(mask) - mask[::-1].index(True)
            entry = [value[j][r], tok, ids[j][r][first:last], acts[j][r][first:last]]
            entries.append([*entry, before - first])
        out.append(entries)
    return out


def _bands(samples: list[list[Any]]) -> list[list[Any]]:
    """The sampled contexts of a feature in its lower-quantile bands: [band, entry], at
    most PER_BAND per band, band b holding the sample's quantiles [b/4, (b+1)/4)."""
    ranked = sorted(samples, key=lambda e: (e[0], e[1]))
    n = len(ranked)
    out: list[list[Any]] = []
    for b in range(N_BANDS):
        lo, hi = b * n // 4, (b + 1) * n // 4
        band = ranked[lo:hi]
        step = max(1, len(band) // PER_BAND)
        out += [[b, e] for e in band[::step][:PER_BAND]]
    return out


def layer_view(job: LayerJob, opt: Options, model: Any, truth_FD: Tensor | None) -> dict[str, Any]:
    """What the pages show of one layer's features (JSON-ready)."""
    stats, sae = job.stats, job.sae
    assert stats is not None
    W_dec_FD = sae.W_dec_LMD[0].detach().float()
    F = W_dec_FD.shape[0]
    nn_ids, nn_cos = nearest_neighbours(W_dec_FD, opt.n_neighbours)
    view: dict[str, Any] = {
        "layer": job.layer,
        "n_features": F,
        "n_tokens": stats.n_tokens,
        "density": _r(stats.density()),
        "mean": _r(stats.mean()),
        "max": _r(stats.max_F),
        "count": stats.count_F.tolist(),
        "dec_norm": _r(W_dec_FD.norm(dim=1)),
        "nn_ids": nn_ids.tolist(),
        "nn_cos": _sig(nn_cos).tolist(),
        "hist_edges": _r(HIST_EDGES),
        "hist": [[np.flatnonzero(h).tolist(), h[h > 0].tolist()] for h in stats.hist_FH.numpy()],
        "top": _contexts(stats.top, stats.before),
        "samples": [_bands(s) for s in _contexts(stats.samples, stats.before)],
        "contexts": stats.before + stats.after > 0,
    }
    if model is not None:
        up, up_v, down, down_v, note = logit_lens(W_dec_FD, model, opt.n_lens)
        view |= {
            "up": up.tolist(),
            "up_v": _sig(up_v, 3).tolist(),
            "down": down.tolist(),
            "down_v": _sig(down_v, 3).tolist(),
            "lens": note,
        }
    if truth_FD is not None:
        ids, cos = ground_truth_match(W_dec_FD, truth_FD)
        view |= {"truth": ids.tolist(), "truth_cos": _r(cos)}
    return view


def token_index(view: dict[str, Any], strings: list[str]) -> dict[str, list[list[int]]]:
    """Token text (stripped) -> [[feature, how many of its top contexts' activating token
    is that text], ...], most first."""
    found: dict[str, dict[int, int]] = {}
    for j, entries in enumerate(view["top"]):
        for entry in entries:
            text = strings[entry[2][entry[4]]].strip() if entry[2] else ""
            if text:
                found.setdefault(text, {}).setdefault(j, 0)
                found[text][j] += 1
    return {
        t: sorted(([j, n] for j, n in fs.items()), key=lambda p: -p[1])
        for t, fs in sorted(found.items())
    }
