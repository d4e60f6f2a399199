"""Harvest throughput against a bare forward of the same model, measured in one run.

    python benchmarks/harvest.py [--model PATH] [--layers all] [--batches 20]

Prints tokens/s of (a) a bare forward of the model's blocks up to the last needed layer
(no hooks), (b) nsae's Harvester (hooks on every layer, early stop, stacked activations),
and (c) reading the same activations back from an on-disk activation cache; then the
ratios harvest/bare and cache/harvest. Timings alternate between methods to share noise.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from nsae.config import asset
from nsae.data.cache import ActivationCache
from nsae.data.source import Harvester, load_source, transformer_blocks


def bare_model(model: torch.nn.Module, last: int) -> torch.nn.Module:
    """The same model with its blocks truncated after `last` and no LM head work kept."""
    bare = copy.deepcopy(model)
    blocks = transformer_blocks(bare)
    del blocks[last + 1 :]
    return bare.base_model


def tokens_per_s(fn, ids_list: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for ids in ids_list:
        fn(ids)
    return sum(i.numel() for i in ids_list) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=asset("kjv-gpt2"))
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model, _ = load_source(args.model)
    layers = list(range(len(transformer_blocks(model))))
    harvester = Harvester(model, layers, "resid_post")
    bare = bare_model(model, layers[-1])
    vocab = model.config.vocab_size
    ids_list = [torch.randint(0, vocab, (args.batch, args.context)) for _ in range(args.batches)]

    def bare_fwd(ids: torch.Tensor) -> None:
        with torch.no_grad():
            bare(ids, use_cache=False)

    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache(tmp, {"bench": True}, "float16")
        n_tokens = args.batches * args.batch * args.context
        cache.ensure(lambda: (harvester(i).flatten(0, 1) for i in ids_list), n_tokens)
        chunks = cache.chunks(args.batch * args.context, torch.device("cpu"), 0)

        rates: dict[str, list[float]] = {"bare": [], "harvest": [], "cache": []}
        for _ in range(args.rounds):
            rates["bare"].append(tokens_per_s(bare_fwd, ids_list))
            rates["harvest"].append(tokens_per_s(harvester, ids_list))
            rates["cache"].append(tokens_per_s(lambda _ids: next(chunks), ids_list))
    best = {k: max(v) for k, v in rates.items()}
    print(
        f"model {args.model}: layers {layers}, batch {args.batch} x {args.context} tokens, "
        f"threads {torch.get_num_threads()}"
    )
    for k, v in best.items():
        print(f"  {k:8s} {v:12,.0f} tokens/s")
    print(f"harvest/bare ratio {best['harvest'] / best['bare']:.3f}")
    print(f"cache/harvest ratio {best['cache'] / best['harvest']:.2f}")


if __name__ == "__main__":
    main()
