"""The tokens and activations a feature pass reads, batch by batch.

LM sources: n = ceil(N / context_size) contexts of the run's evaluation split, chosen by
the rule the run's own evaluation set uses (`nsae.data.contexts.spread_contexts`: context
i * total // n), so N = data.n_eval_tokens gives exactly the tokens the run was evaluated
on; one forward per batch of contexts collects every chosen layer (`Harvester`, stopped
after the last). Synthetic sources: the run's "eval" stream (`SyntheticSource.eval_batch`),
batches of data.batch_size tokens, each token a context of one (no token ids).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nsae.errors import NsaeError


@dataclass
class Batch:
    ids_CT: Tensor | None  # token ids (None: a token-less source)
    x_CTLD: Tensor  # activations of the chosen layers
    keep_CT: Tensor | None  # positions counted (None: all)


class LMStream:
    """Evaluation-split contexts of an LM source and their activations at `layers`."""

    def __init__(
        self, source: Any, data: Any, layers: list[int], n_tokens: int | None, split: str | None
    ) -> None:
        from transformers.utils import logging as hf_logging

        from nsae.data.source import Harvester, configured_source

        hf_logging.disable_progress_bar()
        try:
            model, self.tokenizer = configured_source(source)
        except OSError as err:  # a missing local model or an offline hub name
            raise NsaeError(f"cannot load source model {source.name}: {err}") from None
        self.model, self.data = model, data
        self.harvester = Harvester(model, layers, source.hook_site, None)
        self.n_tokens = int(n_tokens or data.n_eval_tokens)
        self.context_size = int(data.context_size)
        self.n_contexts = -(-self.n_tokens // self.context_size)
        self.total = self.n_contexts * self.context_size
        self.exclude_special = bool(data.get("exclude_special_tokens", False))
        self.split = split or str(data.eval_split)
        if not data.get("streaming", False):
            from nsae.data.contexts import count_contexts

            have = count_contexts(data, self.split, self.tokenizer)
            if have < self.n_contexts:
                raise NsaeError(
                    f"--tokens={self.n_tokens}: split {self.split!r} has {have} contexts of "
                    f"{self.context_size} tokens; valid: --tokens at most "
                    f"{have * self.context_size}"
                )

    def describe(self) -> str:
        d = self.data
        same = self.n_tokens == int(d.n_eval_tokens) and self.split == d.eval_split
        which = "the run's evaluation set" if same else "evenly spaced through the split"
        return (
            f"{self.total:,} tokens: {self.n_contexts} contexts of {self.context_size} "
            f"of split {self.split!r} ({which})"
        )

    def batches(self, contexts_per_batch: int) -> Iterator[Batch]:
        from nsae.data.contexts import spread_contexts

        spread = spread_contexts(
            self.data, self.split, self.tokenizer, self.n_contexts, "n_eval_tokens"
        )
        special = torch.tensor(self.tokenizer.all_special_ids or [-1])
        while chunk := list(itertools.islice(spread, contexts_per_batch)):
            ids_CT = torch.stack(chunk)
            keep_CT = ~torch.isin(ids_CT, special) if self.exclude_special else None
            yield Batch(ids_CT, self.harvester(ids_CT).float(), keep_CT)


class SyntheticStream:
    """The "eval" stream of a synthetic run (its ground-truth dictionaries in `dict_LFD`)."""

    tokenizer = None
    model = None

    def __init__(
        self, source: Any, data: Any, layers: list[int], seed: int, n_tokens: int | None
    ) -> None:
        from nsae.data.synthetic import SyntheticSource

        self.synthetic = SyntheticSource(source, layers, seed, "cpu")
        self.batch_tokens = int(data.batch_size)
        n = int(n_tokens or data.n_eval_tokens)
        self.n_batches = -(-n // self.batch_tokens)
        self.total = self.n_batches * self.batch_tokens
        self.dict_LFD = self.synthetic.dict_LFD

    def describe(self) -> str:
        return (
            f"{self.total:,} tokens of the synthetic source's evaluation stream "
            "(no token ids: no contexts)"
        )

    def batches(self, contexts_per_batch: int) -> Iterator[Batch]:
        for i in range(self.n_batches):
            x_NLD = self.synthetic.eval_batch(i, self.batch_tokens).x_NLD
            yield Batch(None, x_NLD[:, None].float(), None)


def open_stream(
    source: Any,
    data: Any,
    layers: list[int],
    seed: int,
    n_tokens: int | None,
    split: str | None = None,
) -> LMStream | SyntheticStream:
    if source.get("kind", "lm") == "synthetic":
        return SyntheticStream(source, data, layers, seed, n_tokens)
    return LMStream(source, data, layers, n_tokens, split)
