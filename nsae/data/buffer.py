"""A shuffle buffer of activations on the training device.

It holds `capacity` token activations [capacity, L, D]. Each round it serves a random
half of the slots as batches, then refills exactly those slots with freshly harvested
tokens, so every batch mixes tokens from the many contexts that sit in the buffer, and
memory stays fixed at `capacity` tokens.

The batch sequence is a function of the chunk sequence and `seed` alone (the slot
permutations come from their own generator), so a stream resumed after `skip_batches`
batches replays the same chunks and permutations without serving, and then serves exactly
what the uninterrupted stream served from batch `skip_batches` on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor


class ShuffleBuffer:
    """Infinite iterable of [batch_size, L, D] batches drawn from harvested chunks."""

    def __init__(
        self,
        chunks: Iterable[Tensor],
        capacity: int,
        batch_size: int,
        seed: int = 0,
        skip_batches: int = 0,
    ) -> None:
        if capacity < 2 * batch_size:
            raise ValueError(
                f"data.buffer_tokens={capacity} must be at least 2 x data.batch_size={batch_size}"
            )
        self.chunks, self.capacity, self.batch_size, self.seed = chunks, capacity, batch_size, seed
        self.skip_batches = skip_batches
        self._leftover: Tensor | None = None
        self.chunks_taken = 0  # chunks drawn into the buffer so far (replayed ones included)
        self.batches_served = 0  # batches of the stream passed so far (replayed ones included)

    def _take(self, it: Iterator[Tensor], n: int) -> Tensor:
        parts, have = [], 0
        if self._leftover is not None:
            parts.append(self._leftover)
            have = len(self._leftover)
        while have < n:
            chunk = next(it)
            self.chunks_taken += 1
            parts.append(chunk)
            have += len(chunk)
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        self._leftover = rows[n:] if len(rows) > n else None
        return rows[:n]

    def __iter__(self) -> Iterator[Tensor]:
        it = iter(self.chunks)
        self._leftover, self.chunks_taken, self.batches_served = None, 0, 0
        buf_NLD = self._take(it, self.capacity).clone()
        gen = torch.Generator(device=buf_NLD.device).manual_seed(self.seed)
        n_served = (self.capacity // 2) // self.batch_size * self.batch_size
        while True:
            perm = torch.randperm(self.capacity, device=buf_NLD.device, generator=gen)
            served = perm[:n_served]
            for idx in served.split(self.batch_size):
                self.batches_served += 1
                if self.batches_served > self.skip_batches:
                    yield buf_NLD[idx]
            buf_NLD[served] = self._take(it, n_served)
