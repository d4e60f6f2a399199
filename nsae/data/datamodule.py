"""The LightningDataModule: token contexts -> LM forward on the device -> shuffle buffer.

Training batches are activations [batch, L, D] served from a `ShuffleBuffer` on the
training device, refilled by harvesting the train split (sharded by rank, so no two ranks
see the same context). Before training, a held-out sample gives the norm statistics (and
the SAE's b_dec initialisation). Validation and evaluation batches are held-out contexts
[B, T] (this rank's share); the module harvests them with `harvest` and, for the
downstream metrics, splices reconstructions back in through `harvester.logits`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nsae.data.buffer import ShuffleBuffer
from nsae.data.cache import ActivationCache, model_fingerprint
from nsae.data.norms import norm_statistics
from nsae.data.source import Harvester, load_source
from nsae.data.text import load_rows, packed_contexts
from nsae.errors import NsaeError


class ContextStream(IterableDataset):
    """Packed contexts of one split; rank r of w (and each loader worker) takes its share."""

    def __init__(
        self, data: Any, split: str, tokenizer: Any, repeat: bool, rank: int = 0, world: int = 1
    ) -> None:
        self.data, self.split, self.tokenizer, self.repeat = data, split, tokenizer, repeat
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[Tensor]:
        worker = get_worker_info()
        n_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        shards, shard = self.world * n_workers, self.rank * n_workers + worker_id
        for _ in itertools.count() if self.repeat else range(1):
            rows = load_rows(
                self.data.path,
                self.split,
                self.data.get("data_files"),
                self.data.get("streaming", False),
                self.data.get("name"),
            )
            contexts = packed_contexts(
                rows, self.tokenizer, self.data.context_size, self.data.get("text_column", "text")
            )
            yield from itertools.islice(contexts, shard, None, shards)


class ActivationDataModule(L.LightningDataModule):
    def __init__(self, data: Any, source: Any, layers: list[int], seed: int = 0) -> None:
        super().__init__()
        self.data, self.source, self.layers, self.seed = data, source, layers, seed
        self.harvester: Harvester | None = None
        self.norm_sample: Tensor | None = None  # [n_norm_tokens, L, D], identical on all ranks
        self.norm_stats: dict[str, dict[str, float]] = {}
        self.eval_ids = torch.empty(0, 0, dtype=torch.long)  # this rank's evaluation contexts
        self.cache: ActivationCache | None = None
        self.cache_built = False
        # The training stream's position, saved in checkpoints: the chunks it had drawn
        # before this process started.
        self.chunks_skipped = 0
        self.buffer: ShuffleBuffer | None = None

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.harvester is not None:
            return
        trainer = self.trainer
        self.device = trainer.strategy.root_device if trainer else torch.device("cpu")
        self.rank, self.world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        model, self.tokenizer = load_source(self.source.name, self.source.get("dtype", "float32"))
        self.harvester = Harvester(
            model.to(self.device), self.layers, self.source.hook_site, self.source.get("autocast")
        )

        n_norm, n_eval, T = self.data.n_norm_tokens, self.data.n_eval_tokens, self.data.context_size
        held = self._context_batches(self.data.eval_split, repeat=False, sharded=False)
        ids_CT = self._take_contexts(held, -(-max(n_norm, n_eval) // T))
        sample = [self.harvest(c)[0] for c in ids_CT.split(self.data.harvest_batch)]
        self.norm_sample = torch.cat(sample)[:n_norm]
        self.norm_stats = norm_statistics(self.norm_sample, self.layers)
        self.eval_ids = ids_CT[: -(-n_eval // T)][self.rank :: self.world]
        self.cache = self._ensure_cache() if self.data.get("cache", False) else None

    def _ensure_cache(self) -> ActivationCache:
        """Build (once per key, across jobs) or reuse the train split's activation cache."""
        d, src = self.data, self.source
        fields = {
            "model": src.name,
            "model_files": model_fingerprint(src.name),
            "source_dtype": src.get("dtype", "float32"),
            "source_autocast": src.get("autocast"),
            "hook_site": src.hook_site,
            "layers": list(self.layers),
            "dataset": d.path,
            "name": d.get("name"),
            "data_files": d.get("data_files"),
            "split": d.train_split,
            "context_size": d.context_size,
            "exclude_special_tokens": d.get("exclude_special_tokens", False),
        }
        cache = ActivationCache(d.cache_dir, fields, d.get("cache_dtype", "float16"))
        batches = self._context_batches(d.train_split, repeat=False, sharded=False)
        self.cache_built = cache.ensure(
            lambda: (self.harvest(c)[0] for c in batches), d.cache_tokens
        )
        return cache

    def harvest(self, contexts_BT: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 activations [N, L, D] of a batch of contexts, and the [B, T] mask of the
        positions they come from (every position unless special tokens are excluded)."""
        assert self.harvester is not None
        ids_BT = contexts_BT.to(self.device, non_blocking=True)
        acts_BTLD = self.harvester(ids_BT)
        keep_BT = torch.ones_like(ids_BT, dtype=torch.bool)
        if self.data.get("exclude_special_tokens", False):
            special = torch.tensor(self.tokenizer.all_special_ids, device=ids_BT.device)
            keep_BT = ~torch.isin(ids_BT, special)
        return acts_BTLD[keep_BT].float(), keep_BT

    def _context_batches(self, split: str, repeat: bool, sharded: bool) -> DataLoader:
        """Batches of `harvest_batch` contexts, [B, T], of one split."""
        rank, world = (self.rank, self.world) if sharded else (0, 1)
        stream = ContextStream(self.data, split, self.tokenizer, repeat, rank, world)
        workers = self.data.get("num_workers", 0) if repeat else 0
        return DataLoader(stream, batch_size=self.data.harvest_batch, num_workers=workers)

    def _take_contexts(self, batches: DataLoader, n: int) -> Tensor:
        """The first n contexts of a split, [n, T]."""
        contexts = list(itertools.islice((c for batch in batches for c in batch), n))
        if len(contexts) < n:
            raise NsaeError(
                f"split {self.data.eval_split!r} has {len(contexts)} contexts of "
                f"{self.data.context_size} tokens; data.n_eval_tokens and data.n_norm_tokens "
                f"must be at most {len(contexts) * self.data.context_size}"
            )
        return torch.stack(contexts)

    # -- loaders ---------------------------------------------------------------------------
    def train_dataloader(self) -> ShuffleBuffer:
        """This rank's training stream. A resumed run continues the same stream after the
        chunks it had drawn (the buffer's unserved tokens at the checkpoint are skipped)."""
        # (the trailing 0 keeps the data order, and so the README's results, of earlier runs)
        seed = hash((self.seed, self.rank, 0)) % 2**31
        skip = self.chunks_skipped
        if self.cache is not None:
            chunk = self.data.harvest_batch * self.data.context_size
            chunks = self.cache.chunks(chunk, self.device, seed, self.rank, self.world, skip)
        else:
            contexts = self._context_batches(self.data.train_split, repeat=True, sharded=True)
            chunks = (self.harvest(c)[0] for c in itertools.islice(contexts, skip, None))
        self.buffer = ShuffleBuffer(
            chunks, self.data.buffer_tokens, self.data.batch_size, seed=seed
        )
        return self.buffer

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints (from rank 0; every rank draws chunks at the same rate)."""
        taken = self.buffer.chunks_taken if self.buffer is not None else 0
        return {"chunks_drawn": self.chunks_skipped + taken, "norm_stats": self.norm_stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chunks_skipped = state["chunks_drawn"]
        self.norm_stats = state["norm_stats"]

    def val_dataloader(self) -> DataLoader:
        """Batches of this rank's evaluation contexts, [B, T]."""
        return DataLoader(list(self.eval_ids.split(self.data.harvest_batch)), batch_size=None)

    test_dataloader = val_dataloader
