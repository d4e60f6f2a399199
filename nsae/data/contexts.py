"""Which contexts of a text split the datamodule reads: packed-context streams (sharded by
rank and loader worker), the rule that picks n contexts evenly spaced through a split, and
the content fingerprint of a split's files (part of every on-disk key)."""

from __future__ import annotations

import glob
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nsae.data.fingerprint import file_digest
from nsae.data.text import PACKING_RULE, load_rows, packed_contexts
from nsae.errors import NsaeError

__all__ = [
    "PACKING_RULE",
    "SELECTION_RULE",
    "ContextStream",
    "check_eval_disjoint",
    "context_batches",
    "data_fingerprint",
    "own_generator",
    "split_files",
    "spread_contexts",
]


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
                self.data.get("revision"),
            )
            contexts = packed_contexts(
                rows, self.tokenizer, self.data.context_size, self.data.get("text_column", "text")
            )
            yield from itertools.islice(contexts, shard, None, shards)


# Which contexts of the split a cache, the norm sample and the evaluation set hold (part of
# the cache key: change it when the rule changes).
SELECTION_RULE = "n contexts evenly spaced through the split: context i * total // n"
_CONTEXT_COUNTS: dict[str, int] = {}  # per process: a sweep's jobs count a split once


def own_generator() -> torch.Generator:
    """A DataLoader's own generator: without one, every `iter(loader)` draws its base seed
    from the global torch RNG, so validation runs and a resume's replay would shift the
    random stream of training (the Normalized SAE's noise)."""
    return torch.Generator().manual_seed(0)


def split_files(data: Any, split: str) -> list[str]:
    """The local files behind one split (globs expanded), [] for a hub dataset."""
    files = (data.get("data_files") or {}).get(split)
    if files is None:
        path = Path(str(data.path))
        return sorted(str(p) for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    names = [files] if isinstance(files, str) else list(files)
    out: list[str] = []
    for name in map(str, names):
        out += [name] if "://" in name else sorted(glob.glob(name)) or [name]
    return out


def data_fingerprint(data: Any, split: str, root: str | None) -> dict[str, Any]:
    """What determines one split's rows: builder or hub name, config, revision, split, text
    column, whether it is streamed (which changes the context selection), and the sha256 of
    every local file in order (contents, not paths: a moved checkout keeps its key)."""
    files = split_files(data, split)
    return {
        "path": str(data.path),
        "name": data.get("name"),
        "revision": data.get("revision"),
        "split": split,
        "text_column": data.get("text_column", "text"),
        "streaming": bool(data.get("streaming", False)),
        "files": [f if "://" in f else file_digest(f, root) for f in files],
    }


def context_batches(
    data: Any, split: str, tokenizer: Any, repeat: bool, rank: int = 0, world: int = 1
) -> DataLoader:
    """Batches of `data.harvest_batch` contexts, [B, T], of one split (rank r of w's share)."""
    stream = ContextStream(data, split, tokenizer, repeat, rank, world)
    workers = data.get("num_workers", 0) if repeat else 0
    return DataLoader(stream, data.harvest_batch, num_workers=workers, generator=own_generator())


def count_contexts(data: Any, split: str, tokenizer: Any) -> int:
    """How many packed contexts a split has (one pass; remembered per data contents)."""
    fingerprint = data_fingerprint(data, split, data.cache_dir)
    key = json.dumps([fingerprint, data.context_size], sort_keys=True, default=str)
    if key not in _CONTEXT_COUNTS:
        batches = context_batches(data, split, tokenizer, repeat=False)
        _CONTEXT_COUNTS[key] = sum(len(batch) for batch in batches)
    return _CONTEXT_COUNTS[key]


def spread_contexts(data: Any, split: str, tokenizer: Any, n: int, key: str) -> Iterator[Tensor]:
    """n contexts of a split, evenly spaced through it (context i * total // n), so a
    sample smaller than the split still covers all of it; a streamed split (too large
    to count) gives its first n. `key` names the setting that asked for n (in errors)."""
    batches = context_batches(data, split, tokenizer, repeat=False)
    contexts = (c for batch in batches for c in batch)
    total = n if data.get("streaming", False) else count_contexts(data, split, tokenizer)
    if total < n:
        raise NsaeError(
            f"split {split!r} has {total} contexts of {data.context_size} tokens; "
            f"data.{key} must be at most {total * data.context_size}"
        )
    wanted = iter((torch.arange(n) * total // n).tolist())
    target, given = next(wanted, None), 0
    for i, context in enumerate(contexts):
        if target is None:
            return
        if i == target:
            yield context
            given += 1
            target = next(wanted, None)
    if given < n:
        raise NsaeError(
            f"split {split!r} has {given} contexts of {data.context_size} tokens; "
            f"data.{key} must be at most {given * data.context_size}"
        )


def check_eval_disjoint(d: Any) -> None:
    """Refuse an eval split that is the train split (same name, or same file contents),
    unless `data.allow_eval_overlap`."""
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
