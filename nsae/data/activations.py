"""Activation sources: where a job's activations come from, apart from Lightning.

One interface, two implementations, built once per job (once per cohort of jobs, which
share the object):

    norm_sample [N, L, D], norm_positions [N]   the train split's first n_norm_tokens, and
                                                each token's position in its context
    train_chunks(seed, rank, world)             this rank's endless training chunks [n, L, D]
    eval_ids                                    what the evaluation loader iterates: this
                                                rank's evaluation contexts (LM) or batches
                                                (synthetic)

`LMActivations` harvests a language model (`nsae.data.source.Harvester`): the norm sample
and the evaluation contexts (stored once per key as fixed inputs, `nsae.data.fixed`, with
whatever the evaluation adds through `fixed_extras`), the train split's activation cache
(`nsae.data.cache`) or a live harvest, and, for the evaluation, `eval_batch` and the LM
itself (`harvester`). `SyntheticActivations` draws them from `nsae.data.synthetic`.
Nothing here knows a metric.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from nsae.data.cache import ActivationCache
from nsae.data.contexts import (
    PACKING_RULE,
    SELECTION_RULE,
    check_eval_disjoint,
    context_batches,
    data_fingerprint,
    spread_contexts,
)
from nsae.data.fingerprint import source_fingerprint
from nsae.data.fixed import FixedInputs
from nsae.data.source import Harvester, configured_source
from nsae.data.synthetic import SyntheticSource
from nsae.progress import progress

# What the evaluation stores with the fixed inputs: (LM, ids [B, T]) -> {name: [L, B, ...]}
FixedExtras = Callable[[Any, Tensor], dict[str, Tensor]]


def eval_positions(keep_BT: Tensor) -> Tensor:
    """Each harvested token's position in its context, [N] (long, on keep_BT's device),
    aligned with the rows of `harvest(...)[0]`; position 0 is the context's BOS."""
    B, T = keep_BT.shape
    return torch.arange(T, device=keep_BT.device).expand(B, T)[keep_BT]


class LMActivations:
    """A language model's activations at `layers` (see the module doc)."""

    synthetic = None

    def __init__(
        self,
        data: Any,
        source: Any,
        layers: list[int],
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        fixed_extras: FixedExtras | None = None,
    ) -> None:
        self.data, self.source, self.layers = data, source, list(layers)
        self.device, self.rank, self.world = device, rank, world
        self.fixed_extras = fixed_extras
        check_eval_disjoint(data)
        model, self.tokenizer = configured_source(source)
        self.harvester: Any = Harvester(
            model.to(device), self.layers, source.hook_site, source.get("autocast")
        )
        self.fixed: FixedInputs | None = None  # the stored fixed inputs' entry, if reused
        self.stored: dict[str, Tensor] | None = None  # ... and its tensors (on the CPU)
        if data.get("reuse_fixed_inputs", True):
            self.fixed = FixedInputs(data.cache_dir, self._fixed_fields())
            self.stored = self.fixed.load_or_build(self._build_fixed)
            self.norm_sample = self.stored["norm_sample"].to(device)
            self.norm_positions = self.stored["norm_positions"].to(device)
            all_eval_ids = self.stored["eval_ids"]
        else:
            self.norm_sample, self.norm_positions = self._harvest_norm_sample()
            all_eval_ids = self._eval_contexts()
        self.all_eval_ids = all_eval_ids  # every rank's evaluation contexts [C, T]
        self.eval_index = torch.arange(len(all_eval_ids))[rank::world]  # this rank's
        self.eval_ids = all_eval_ids[self.eval_index]
        self.cache: ActivationCache | None = None
        self.cache_built = False
        if data.get("cache", False):
            self.cache = self._ensure_cache()

    # -- the fixed inputs: norm sample and evaluation set ------------------------------------
    def _harvest_norm_sample(self) -> tuple[Tensor, Tensor]:
        """The train split's first n_norm_tokens activations [N, L, D] and positions [N]."""
        d = self.data
        n = -(-d.n_norm_tokens // d.context_size)
        norm_ids = self._take_contexts(d.train_split, n, "n_norm_tokens")
        acts, positions = [], []
        with progress(norm_ids.numel(), "norm sample", "tokens") as bar:
            for ids_BT in norm_ids.split(d.harvest_batch):
                x_NLD, keep_BT = self.harvest(ids_BT)
                acts.append(x_NLD)
                positions.append(eval_positions(keep_BT))
                bar.update(ids_BT.numel())
        return torch.cat(acts)[: d.n_norm_tokens], torch.cat(positions)[: d.n_norm_tokens]

    def _eval_contexts(self) -> Tensor:
        d = self.data
        n = -(-d.n_eval_tokens // d.context_size)
        return self._take_contexts(d.eval_split, n, "n_eval_tokens")

    def _build_fixed(self) -> dict[str, Tensor]:
        """Everything `nsae.data.fixed` stores: the norm sample, the evaluation contexts,
        their activations, and what `fixed_extras` computes from them (the evaluation's
        zero-ablation terms)."""
        norm_sample, norm_positions = self._harvest_norm_sample()
        eval_ids = self._eval_contexts()
        acts, keeps, extras = [], [], []
        with progress(eval_ids.numel(), "evaluation set", "tokens") as bar:
            for ids_BT in eval_ids.split(self.data.harvest_batch):
                ids_BT = ids_BT.to(self.device)
                acts.append(self.harvester(ids_BT).float().cpu())
                keeps.append(self.keep_mask(ids_BT).cpu())
                if self.fixed_extras is not None:
                    extras.append(self.fixed_extras(self.harvester, ids_BT))
                bar.update(ids_BT.numel())
        stored = {
            "norm_sample": norm_sample,
            "norm_positions": norm_positions,
            "eval_ids": eval_ids,
            "eval_acts": torch.cat(acts),
            "eval_keep": torch.cat(keeps),
        }
        for name in extras[0] if extras else []:  # [L, B, ...] per batch -> [L, C, ...]
            stored[name] = torch.cat([e[name].cpu() for e in extras], dim=1)
        return stored

    def _stream_fields(self) -> dict[str, Any]:
        """What fixes the activations of a context: the source, where it is read, and how
        text becomes contexts (shared by the cache's and the fixed inputs' keys)."""
        d, src = self.data, self.source
        return {
            "model": src.name,
            "model_files": source_fingerprint(src, d.cache_dir),
            "source_dtype": src.get("dtype", "float32"),
            "source_autocast": src.get("autocast"),
            "hook_site": src.hook_site,
            "layers": list(self.layers),
            "context_size": d.context_size,
            "packing": PACKING_RULE,
            "selection": SELECTION_RULE,
            "exclude_special_tokens": d.get("exclude_special_tokens", False),
        }

    def _fixed_fields(self) -> dict[str, Any]:
        d = self.data
        fields = {
            **self._stream_fields(),
            "train_data": data_fingerprint(d, d.train_split, d.cache_dir),
            "eval_data": data_fingerprint(d, d.eval_split, d.cache_dir),
            "n_norm_tokens": d.n_norm_tokens,
            "n_eval_tokens": d.n_eval_tokens,
            "harvest_batch": d.harvest_batch,  # the LM's batch can change its float results
        }
        if self.fixed_extras is None:  # an entry without the evaluation's terms
            fields["no_extras"] = True
        return fields

    # -- the evaluation set, batch by batch ----------------------------------------------------
    def eval_batch(self, index_B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """An evaluation batch from indices into the evaluation contexts: (ids [B, T],
        activations [N, L, D] of its kept positions, kept-position mask [B, T]), read from
        the fixed inputs when they are stored, else harvested."""
        index_B = index_B.cpu()
        ids_BT = self.all_eval_ids[index_B].to(self.device)
        if self.stored is None:
            x_NLD, keep_BT = self.harvest(ids_BT)
            return ids_BT, x_NLD, keep_BT
        keep_BT = self.stored["eval_keep"][index_B].to(self.device)
        acts_BTLD = self.stored["eval_acts"][index_B].to(self.device)
        return ids_BT, acts_BTLD[keep_BT], keep_BT

    def stored_extra(self, name: str, index_B: Tensor) -> Tensor | None:
        """A stored `fixed_extras` tensor's rows [L, B, ...] of an evaluation batch (None
        when the fixed inputs are not stored, or were stored without it)."""
        if self.stored is None or name not in self.stored:
            return None
        return self.stored[name][:, index_B.cpu()]

    def val_batches(self) -> list[Tensor]:
        """This rank's evaluation batches, as indices [B] into `all_eval_ids`."""
        return list(self.eval_index.split(self.data.harvest_batch))

    # -- harvesting ----------------------------------------------------------------------------
    def harvest(self, contexts_BT: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 activations [N, L, D] of a batch of contexts, and the [B, T] mask of the
        positions they come from (every position unless special tokens are excluded)."""
        ids_BT = contexts_BT.to(self.device, non_blocking=True)
        acts_BTLD = self.harvester(ids_BT)
        keep_BT = self.keep_mask(ids_BT)
        return acts_BTLD[keep_BT].float(), keep_BT

    def keep_mask(self, ids_BT: Tensor) -> Tensor:
        """[B, T]: the positions harvested (all, unless special tokens are excluded)."""
        if not self.data.get("exclude_special_tokens", False):
            return torch.ones_like(ids_BT, dtype=torch.bool)
        special = torch.tensor(self.tokenizer.all_special_ids, device=ids_BT.device)
        return ~torch.isin(ids_BT, special)

    def _take_contexts(self, split: str, n: int, key: str) -> Tensor:
        """n contexts of a split, evenly spaced through it, [n, T]."""
        return torch.stack(list(spread_contexts(self.data, split, self.tokenizer, n, key)))

    # -- training ------------------------------------------------------------------------------
    def _ensure_cache(self) -> ActivationCache:
        """Build (once per key, across jobs) or reuse the train split's activation cache."""
        d = self.data
        fields = {
            **self._stream_fields(),
            "data": data_fingerprint(d, d.train_split, d.cache_dir),
            "n_tokens": d.cache_tokens,
        }
        cache = ActivationCache(d.cache_dir, fields, d.get("cache_dtype", "float16"))

        def harvested() -> Iterator[Tensor]:
            n = -(-d.cache_tokens // d.context_size)
            spread = spread_contexts(d, d.train_split, self.tokenizer, n, "cache_tokens")
            while batch := list(itertools.islice(spread, d.harvest_batch)):
                yield self.harvest(torch.stack(batch))[0]

        width = len(self.layers) * self.harvester.model.config.hidden_size
        self.cache_built = cache.ensure(harvested, d.cache_tokens, width)
        return cache

    def train_chunks(self, seed: int, rank: int, world: int) -> Iterator[Tensor]:
        """This rank's training chunks [n, L, D]: from the cache, else harvested live from
        the train split (sharded by rank, so no two ranks see the same context)."""
        if self.cache is not None:
            chunk = self.data.harvest_batch * self.data.context_size
            return self.cache.chunks(chunk, self.device, seed, rank, world)
        contexts = context_batches(
            self.data, self.data.train_split, self.tokenizer, True, rank, world
        )
        return (self.harvest(c)[0] for c in contexts)


class SyntheticActivations:
    """Synthetic layers (`nsae.data.synthetic`): the norm sample from the "norm" stream, the
    evaluation set as indices of the data.eval_split stream ("eval" or "validation";
    batches of data.batch_size tokens), no
    cache; no token is at position 0 (there is no BOS)."""

    cache = None
    fixed = None
    cache_built = False

    def __init__(
        self, data: Any, source: Any, layers: list[int], seed: int, device: torch.device,
        rank: int = 0, world: int = 1,
    ) -> None:  # fmt: skip
        self.data = data
        self.synthetic = SyntheticSource(source, layers, seed, device, data.eval_split)
        self.norm_sample = self.synthetic.norm_sample(data.n_norm_tokens)
        self.norm_positions = torch.ones(len(self.norm_sample), dtype=torch.long)
        indices = self.synthetic.eval_indices(data.n_eval_tokens, data.batch_size, rank, world)
        self.eval_ids = torch.tensor(indices, dtype=torch.long)

    def val_batches(self) -> list[int]:
        return self.eval_ids.tolist()

    def train_chunks(self, seed: int, rank: int, world: int) -> Iterator[Tensor]:
        return self.synthetic.train_chunks(self.synthetic.chunk_tokens, rank, world)


def open_activations(
    data: Any,
    source: Any,
    layers: list[int],
    seed: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    fixed_extras: FixedExtras | None = None,
) -> LMActivations | SyntheticActivations:
    """The configured source's activations (`source.kind`: lm or synthetic)."""
    if source.get("kind", "lm") == "synthetic":
        return SyntheticActivations(data, source, layers, seed, device, rank, world)
    return LMActivations(data, source, layers, device, rank, world, fixed_extras)
