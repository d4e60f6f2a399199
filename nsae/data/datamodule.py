"""The LightningDataModule: token contexts -> LM forward on the device -> shuffle buffer.

Training batches are activations [batch, L, D] served from a `ShuffleBuffer` on the
training device, refilled by harvesting the train split (sharded by rank, so no two ranks
see the same context), or read from the on-disk activation cache of the train split.
Before training, the first contexts of the TRAIN split give the norm sample: the norm
statistics (n_l, the coefficients, the evaluation norm bins) and the SAE's b_dec
initialisation, so nothing is fitted on evaluation tokens. An eval split that is the train
split (same split, or same file contents) is refused unless `data.allow_eval_overlap`.
Validation and evaluation batches are the eval split's first contexts [B, T] (this rank's
share); the module harvests them with `harvest`, finds each token's position with
`eval_positions(keep_BT)`, and, for the downstream metrics, splices reconstructions back in
through `harvester.logits`.

The training stream is a function of (seed, rank, world, batches consumed): a run resumed
from a checkpoint rebuilds its buffer by replaying the same chunks and permutations without
serving them (re-reading the cache, or re-harvesting without it), so from the next step on
it sees bit for bit the batches of the uninterrupted run. The batches consumed are
`trainer.global_step x accumulate_grad_batches` (the loop prefetches, so what the iterator
yielded would overcount); Lightning restores `global_step` before it asks for the loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from nsae.console import progress
from nsae.data.buffer import ShuffleBuffer
from nsae.data.cache import ActivationCache, file_digest, source_fingerprint
from nsae.data.contexts import (
    PACKING_RULE,
    SELECTION_RULE,
    context_batches,
    data_fingerprint,
    own_generator,
    split_files,
    spread_contexts,
)
from nsae.data.fixed import FixedInputs
from nsae.data.norms import add_input_scales, norm_statistics
from nsae.data.shared import BankShare
from nsae.data.source import Harvester, configured_source
from nsae.data.synthetic import SyntheticSource
from nsae.errors import NsaeError
from nsae.metrics.splice import clean_log_probs, token_terms


class ActivationDataModule(L.LightningDataModule):
    """After `setup`: `norm_sample` [N, L, D] and `norm_positions` [N] (the first
    n_norm_tokens of the train split, and each token's position in its context),
    `norm_stats` (`norm_statistics` of them, each row with its "input_scale" s_l),
    `eval_ids` [C, T] (this rank's evaluation contexts), `cache` (or None);
    `harvest(ids_BT)` and `eval_positions(keep_BT)` for the module's evaluation batches."""

    def __init__(
        self,
        data: Any,
        source: Any,
        layers: list[int],
        seed: int = 0,
        share: BankShare | None = None,
        name: str = "",
    ) -> None:
        """share, name: in a bank (hydra/launcher=nsae_bank), what this job (`name`) shares
        with the bank's other jobs: the LM, the fixed inputs, the training stream."""
        super().__init__()
        self.share, self.name = share, name
        self.data, self.source, self.layers, self.seed = data, source, layers, seed
        self.harvester: Harvester | None = None
        self.norm_sample: Tensor | None = None  # [N, L, D] from the train split, all ranks
        self.norm_positions: Tensor | None = None  # [N] each sample token's context position
        self.norm_stats: dict[str, dict[str, Any]] = {}
        self.eval_ids = torch.empty(0, 0, dtype=torch.long)  # this rank's evaluation contexts
        self.cache: ActivationCache | None = None
        self.cache_built = False
        self.batches_consumed = 0  # from a checkpoint; used when no trainer is attached
        self.buffer: ShuffleBuffer | None = None
        self.synthetic: SyntheticSource | None = None  # source.kind=synthetic
        self.fixed: FixedInputs | None = None  # the stored fixed inputs' entry, if reused
        self.stored: dict[str, Tensor] | None = None  # ... and its tensors (on the CPU)
        self.all_eval_ids = torch.empty(0, 0, dtype=torch.long)  # every rank's contexts
        self.eval_index = torch.empty(0, dtype=torch.long)  # this rank's, into all_eval_ids

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.harvester is not None or self.synthetic is not None:
            return
        if self.share is not None:
            self.share.setup(self, self._own_setup)
        else:
            self._own_setup()

    def _own_setup(self) -> None:
        trainer = self.trainer
        self.device = trainer.strategy.root_device if trainer else torch.device("cpu")
        self.rank, self.world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.source.get("kind", "lm") == "synthetic":
            self._setup_synthetic()
            return
        self._check_eval_disjoint()
        model, self.tokenizer = configured_source(self.source)
        self.harvester = Harvester(
            model.to(self.device), self.layers, self.source.hook_site, self.source.get("autocast")
        )
        if self.data.get("reuse_fixed_inputs", True):
            self.fixed = FixedInputs(self.data.cache_dir, self._fixed_fields())
            self.stored = self.fixed.load_or_build(self._build_fixed)
            self.norm_sample = self.stored["norm_sample"].to(self.device)
            self.norm_positions = self.stored["norm_positions"].to(self.device)
            all_eval_ids = self.stored["eval_ids"]
        else:
            self.norm_sample, self.norm_positions = self._harvest_norm_sample()
            all_eval_ids = self._eval_contexts()
        self._set_norm_stats()
        self.all_eval_ids = all_eval_ids
        self.eval_index = torch.arange(len(all_eval_ids))[self.rank :: self.world]
        self.eval_ids = all_eval_ids[self.eval_index]
        self.cache = self._ensure_cache() if self.data.get("cache", False) else None

    def _harvest_norm_sample(self) -> tuple[Tensor, Tensor]:
        """The train split's first n_norm_tokens activations [N, L, D] and positions [N]."""
        d = self.data
        norm_ids = self._take_contexts(
            d.train_split, -(-d.n_norm_tokens // d.context_size), "n_norm_tokens"
        )
        acts, positions = [], []
        with progress(norm_ids.numel(), "norm sample", "tokens") as bar:
            for ids_BT in norm_ids.split(d.harvest_batch):
                x_NLD, keep_BT = self.harvest(ids_BT)
                acts.append(x_NLD)
                positions.append(self.eval_positions(keep_BT))
                bar.update(ids_BT.numel())
        return torch.cat(acts)[: d.n_norm_tokens], torch.cat(positions)[: d.n_norm_tokens]

    def _eval_contexts(self) -> Tensor:
        d = self.data
        return self._take_contexts(
            d.eval_split, -(-d.n_eval_tokens // d.context_size), "n_eval_tokens"
        )

    def _build_fixed(self) -> dict[str, Tensor]:
        """Everything `nsae.data.fixed` stores: the norm sample, the evaluation contexts,
        their activations, and each layer's zero-ablation terms for the splice metrics."""
        assert self.harvester is not None
        norm_sample, norm_positions = self._harvest_norm_sample()
        eval_ids = self._eval_contexts()
        acts, keeps, kl, ce = [], [], [], []
        with progress(eval_ids.numel(), "evaluation set", "tokens") as bar:
            for ids_BT in eval_ids.split(self.data.harvest_batch):
                ids_BT = ids_BT.to(self.device)
                acts.append(self.harvester(ids_BT).float().cpu())
                keeps.append(self.keep_mask(ids_BT).cpu())
                logp_clean = clean_log_probs(self.harvester.logits(ids_BT))
                terms = [self._ablate(ids_BT, j, logp_clean) for j in range(len(self.layers))]
                kl.append(torch.stack([t[0] for t in terms]).cpu())
                ce.append(torch.stack([t[1] for t in terms]).cpu())
                bar.update(ids_BT.numel())
        return {
            "norm_sample": norm_sample,
            "norm_positions": norm_positions,
            "eval_ids": eval_ids,
            "eval_acts": torch.cat(acts),
            "eval_keep": torch.cat(keeps),
            "zero_kl_LCT": torch.cat(kl, dim=1),
            "zero_ce_LCT": torch.cat(ce, dim=1),
        }

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

    def zero_terms(self, index_B: Tensor, j: int, logp_clean_BTV: Tensor) -> tuple[Tensor, Tensor]:
        """Layer j's zero-ablation (kl [B, T], ce [B, T - 1]) of an evaluation batch: stored,
        or from a forward with that layer zeroed."""
        if self.stored is not None:
            index_B = index_B.cpu()
            return self.stored["zero_kl_LCT"][j, index_B], self.stored["zero_ce_LCT"][j, index_B]
        return self._ablate(self.all_eval_ids[index_B.cpu()].to(self.device), j, logp_clean_BTV)

    def clean_log_probs(self, index_B: Tensor, ids_BT: Tensor) -> Tensor:
        """The clean model's log-probabilities [B, T, V] of an evaluation batch (in a bank:
        one forward for all of the bank's jobs)."""

        def compute() -> Tensor:
            assert self.harvester is not None
            return clean_log_probs(self.harvester.logits(ids_BT))

        if self.share is None:
            return compute()
        return self.share.clean_log_probs(tuple(index_B.tolist()), compute)

    def _ablate(self, ids_BT: Tensor, j: int, logp_clean_BTV: Tensor) -> tuple[Tensor, Tensor]:
        """`token_terms` of a forward with layer j's activation zeroed at every position (BOS,
        EOS and pad included: SAEBench's ablation too)."""
        assert self.harvester is not None
        return token_terms(
            logp_clean_BTV, self.harvester.logits(ids_BT, j, torch.zeros_like), ids_BT
        )

    def _setup_synthetic(self) -> None:
        """Synthetic layers: the norm sample from the "norm" stream, the evaluation set as
        indices of the "eval" stream (batches of data.batch_size tokens), no cache; no
        token is at position 0 (there is no BOS)."""
        d = self.data
        self.synthetic = SyntheticSource(self.source, self.layers, self.seed, self.device)
        self.norm_sample = self.synthetic.norm_sample(d.n_norm_tokens)
        self.norm_positions = torch.ones(len(self.norm_sample), dtype=torch.long)
        self._set_norm_stats()
        indices = self.synthetic.eval_indices(d.n_eval_tokens, d.batch_size, self.rank, self.world)
        self.eval_ids = torch.tensor(indices, dtype=torch.long)

    def _set_norm_stats(self) -> None:
        """The norm statistics of the (raw) norm sample, each layer's row with its input
        scale s_l (`data.normalize_activations`; see `add_input_scales`)."""
        assert self.norm_sample is not None
        self.norm_stats = norm_statistics(self.norm_sample, self.layers, self.norm_positions)
        method = str(self.data.get("normalize_activations", "none"))
        add_input_scales(self.norm_stats, self.layers, method, self.norm_sample.shape[-1])

    def _check_eval_disjoint(self) -> None:
        """Refuse an eval split that is the train split (same name, or same file contents)."""
        d = self.data
        if d.get("allow_eval_overlap", False):
            return
        why = "the same split" if d.eval_split == d.train_split else None
        if why is None and d.get("data_files"):
            root = d.get("cache_dir")
            digests = {file_digest(f, root): f for f in split_files(d, d.train_split)}
            same = [f for f in split_files(d, d.eval_split) if file_digest(f, root) in digests]
            why = f"{same[0]} has the contents of a train file" if same else None
        if why is not None:
            raise NsaeError(
                f"data.eval_split={d.eval_split!r} overlaps data.train_split={d.train_split!r} "
                f"({why}), so evaluation would use training tokens; valid: a disjoint eval "
                "split, or data.allow_eval_overlap=true"
            )

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
        return {
            **self._stream_fields(),
            "train_data": data_fingerprint(d, d.train_split, d.cache_dir),
            "eval_data": data_fingerprint(d, d.eval_split, d.cache_dir),
            "n_norm_tokens": d.n_norm_tokens,
            "n_eval_tokens": d.n_eval_tokens,
            "harvest_batch": d.harvest_batch,  # the LM's batch can change its float results
        }

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

    def harvest(self, contexts_BT: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 activations [N, L, D] of a batch of contexts, and the [B, T] mask of the
        positions they come from (every position unless special tokens are excluded)."""
        assert self.harvester is not None
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

    @staticmethod
    def eval_positions(keep_BT: Tensor) -> Tensor:
        """Each harvested token's position in its context, [N] (long, on keep_BT's device),
        aligned with the rows of `harvest(...)[0]`; position 0 is the context's BOS."""
        B, T = keep_BT.shape
        return torch.arange(T, device=keep_BT.device).expand(B, T)[keep_BT]

    def _context_batches(self, split: str, repeat: bool, sharded: bool) -> DataLoader:
        """Batches of `harvest_batch` contexts, [B, T], of one split."""
        rank, world = (self.rank, self.world) if sharded else (0, 1)
        return context_batches(self.data, split, self.tokenizer, repeat, rank, world)

    def _take_contexts(self, split: str, n: int, key: str) -> Tensor:
        """n contexts of a split, evenly spaced through it, [n, T]."""
        return torch.stack(list(spread_contexts(self.data, split, self.tokenizer, n, key)))

    # -- loaders ---------------------------------------------------------------------------
    def _consumed(self) -> int:
        """Training batches already consumed: from the trainer (restored from a checkpoint
        before the loader is built), else from `load_state_dict`."""
        if self.trainer is None:
            return self.batches_consumed
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> Iterable[Tensor]:
        """This rank's training stream, positioned after the batches already consumed (in a
        bank: served from the stream the bank's jobs share)."""
        self.batches_consumed = self._consumed()
        if self.share is None:
            self.buffer = self._train_buffer()
            return self.buffer
        stream = self.share.train_stream(self.name, self._train_buffer)
        self.buffer = self.share.buffer
        return stream

    def _train_buffer(self) -> ShuffleBuffer:
        # (the trailing 0 keeps the data order, and so the README's results, of earlier runs)
        seed = hash((self.seed, self.rank, 0)) % 2**31
        if self.synthetic is not None:
            chunks = self.synthetic.train_chunks(self.synthetic.chunk_tokens, self.rank, self.world)
        elif self.cache is not None:
            chunk = self.data.harvest_batch * self.data.context_size
            chunks = self.cache.chunks(chunk, self.device, seed, self.rank, self.world)
        else:
            contexts = self._context_batches(self.data.train_split, repeat=True, sharded=True)
            chunks = (self.harvest(c)[0] for c in contexts)
        return ShuffleBuffer(
            chunks, self.data.buffer_tokens, self.data.batch_size, seed, self.batches_consumed
        )

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints (from rank 0; every rank consumes batches at the same rate):
        the batches consumed (what a resumed stream skips), the chunks the stream had drawn
        (prefetch included; informative), and the norm statistics."""
        drawn = self.buffer.chunks_taken if self.buffer is not None else 0
        return {
            "batches_consumed": self._consumed(),
            "chunks_drawn": drawn,
            "norm_stats": self.norm_stats,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches_consumed = state.get("batches_consumed", 0)
        self.norm_stats = state["norm_stats"]

    def val_dataloader(self) -> DataLoader:
        """Batches of this rank's evaluation contexts as indices [B] into `all_eval_ids`
        (see `eval_batch`; synthetic: batch indices)."""
        if self.synthetic is not None:
            batches = self.eval_ids.tolist()
        else:
            batches = list(self.eval_index.split(self.data.harvest_batch))
        return DataLoader(batches, batch_size=None, generator=own_generator())

    test_dataloader = val_dataloader
