"""The LightningDataModule: a thin adapter from an activation source to Lightning's loops.

The source (`nsae.data.activations`: an LM's activations or synthetic ones) is opened in
`setup`, on the training device (in a cohort, once for all of its jobs). Here are only what
Lightning asks for: the norm statistics of the source's norm sample (n_l, the coefficients,
the evaluation norm bins, the input scales), the training loader (a `ShuffleBuffer` on the
source's chunks), the evaluation loader (indices of held-out contexts or batches), and the
state a checkpoint keeps.

The training stream is a function of (seed, rank, world, batches consumed): a run resumed
from a checkpoint rebuilds its buffer by replaying the same chunks and permutations without
serving them (re-reading the cache, or re-harvesting without it), so from the next step on
it sees bit for bit the batches of the uninterrupted run. The batches consumed are
`trainer.global_step x accumulate_grad_batches` (the loop prefetches, so what the iterator
yielded would overcount); Lightning restores `global_step` before it asks for the loader.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from nsae.data.activations import FixedExtras, open_activations
from nsae.data.buffer import ShuffleBuffer
from nsae.data.contexts import own_generator
from nsae.data.norms import add_input_scales, norm_statistics
from nsae.data.shared import CohortShare


class ActivationDataModule(L.LightningDataModule):
    """After `setup`: `acts` (the activation source), `norm_stats` (`norm_statistics` of
    its norm sample, each row with its "input_scale" s_l), and whether this job built the
    source's stored entries (`built`)."""

    def __init__(
        self,
        data: Any,
        source: Any,
        layers: list[int],
        seed: int = 0,
        share: CohortShare | None = None,
        name: str = "",
        fixed_extras: FixedExtras | None = None,
    ) -> None:
        """share, name: in a cohort (hydra/launcher=nsae_bank), what this job (`name`)
        shares with the cohort's other jobs: the activation source, the training stream.
        fixed_extras: what the evaluation stores with the fixed inputs (`nsae.evaluation`)."""
        super().__init__()
        self.share, self.name, self.fixed_extras = share, name, fixed_extras
        self.data, self.source, self.layers, self.seed = data, source, layers, seed
        self.acts: Any = None
        self.norm_stats: dict[str, dict[str, Any]] = {}
        self.built = {"activation_cache": False, "fixed_inputs": False}
        self.batches_consumed = 0  # from a checkpoint; used when no trainer is attached
        self.buffer: ShuffleBuffer | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.acts is not None:
            return
        trainer = self.trainer
        self.device = trainer.strategy.root_device if trainer else torch.device("cpu")
        self.rank, self.world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.share is not None:
            self.acts, mine = self.share.activations(self._open)
        else:
            self.acts, mine = self._open(), True
        if mine:
            fixed = self.acts.fixed
            self.built = {
                "activation_cache": bool(self.acts.cache_built),
                "fixed_inputs": bool(fixed is not None and fixed.built),
            }
        self.norm_stats = norm_statistics(self.acts.norm_sample, self.layers, self.norm_positions)
        method = str(self.data.get("normalize_activations", "none"))
        add_input_scales(self.norm_stats, self.layers, method, self.norm_sample.shape[-1])

    def _open(self) -> Any:
        return open_activations(
            self.data, self.source, self.layers, self.seed, self.device, self.rank, self.world,
            self.fixed_extras,
        )  # fmt: skip

    # -- the source's facts, as the module, the evaluation and metrics.json read them --------
    @property
    def norm_sample(self) -> Tensor:
        return self.acts.norm_sample

    @property
    def norm_positions(self) -> Tensor:
        return self.acts.norm_positions

    @property
    def eval_ids(self) -> Tensor:
        return self.acts.eval_ids

    @property
    def synthetic(self) -> Any:
        return self.acts.synthetic

    def clean_log_probs(self, index_B: Tensor, compute: Any) -> Tensor:
        """The clean model's log-probabilities [B, T, V] of an evaluation batch, `compute()`d
        (in a cohort: once for all of the cohort's jobs)."""
        if self.share is None:
            return compute()
        return self.share.clean_log_probs(tuple(index_B.tolist()), compute)

    # -- loaders ---------------------------------------------------------------------------
    def _consumed(self) -> int:
        """Training batches already consumed: from the trainer (restored from a checkpoint
        before the loader is built), else from `load_state_dict`."""
        if self.trainer is None:
            return self.batches_consumed
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> Iterable[Tensor]:
        """This rank's training stream, positioned after the batches already consumed (in a
        cohort: served from the stream the cohort's jobs share)."""
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
        chunks = self.acts.train_chunks(seed, self.rank, self.world)
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
        """This rank's evaluation batches: indices [B] into the source's evaluation contexts
        (`LMActivations.eval_batch`), or synthetic batch indices."""
        return DataLoader(self.acts.val_batches(), batch_size=None, generator=own_generator())

    test_dataloader = val_dataloader
