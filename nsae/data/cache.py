"""The on-disk activation cache, shared by the jobs of a sweep.

A cache entry holds the activations of a split's first `n_tokens` tokens as one
memory-mappable `.npy` array [N, L, D]. Its key is a hash of everything that changes the
stored numbers (`fields`, built by the datamodule): the model's weights, config and every
tokenizer file (content hashes of a local model directory, or hub name + resolved commit),
the data (content hashes of local data files, or hub name, config, revision, split, text
column), token count, context size, packing rule, layers, hook site, source dtype and
autocast, special-token rule, storage dtype and `FORMAT_VERSION`. `meta.json` records them
all readably, with the key. The content hashes are `nsae.data.fingerprint`'s.

An entry is written into `<key>.tmp-<pid>` and renamed into place, under an exclusive
file lock `<key>.lock` held for the whole build: of several jobs that need the same entry,
one harvests while the others wait, then all read the same file. A build first removes
orphaned partial builds of any key: a `<key>.tmp-*` whose `<key>.lock` nobody holds (its
builder died; this also holds across hosts sharing the cache directory, where a pid says
nothing). A finished entry is never rewritten (its files are made read-only).

float16 storage: chunks are checked as they come; at the first |x| > 65504 one warning is
logged and the entry is harvested again (calling `harvest()` anew; overflows come early,
e.g. at BOS, so little is redone) and stored in float32, so no value is ever rounded to
float16; meta.json says `requested_dtype: float16, stored_dtype: float32, overflow: true`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nsae.errors import NsaeError
from nsae.progress import progress

log = logging.getLogger(__name__)
FORMAT_VERSION = 2
_DTYPES = {"float16": np.float16, "float32": np.float32}
FLOAT16_MAX = 65504.0


def cache_key(fields: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path`; with wait=False yield False at once if it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mark_used(root: Path, key: str) -> None:
    """`<key>.used`'s time is when a job last used the entry (`python -m nsae.cache`)."""
    with suppress(OSError):  # a read-only shared cache: its entries' use goes unrecorded
        (root / f"{key}.used").touch()


def remove_orphans(root: Path, held_key: str | None = None) -> list[Path]:
    """Remove partial builds (`<key>.tmp-*`) whose key's lock nobody holds (or whose key is
    `held_key`, the lock the caller holds); return them."""
    removed = []
    for tmp in sorted(root.glob("*.tmp-*")):
        key = tmp.name.split(".tmp-")[0]
        with locked(root / f"{key}.lock", wait=False) as free:
            if (free or key == held_key) and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


class ActivationCache:
    """One cache entry: `ensure()` builds it once; `chunks()` reads it back."""

    def __init__(self, root: str | Path, fields: dict[str, Any], dtype: str = "float16") -> None:
        if dtype not in _DTYPES:
            raise NsaeError(f"data.cache_dtype={dtype!r}; valid: {', '.join(_DTYPES)}")
        self.fields, self.dtype = {**fields, "dtype": dtype}, dtype
        self.key = cache_key(self.fields)
        self.root = Path(root)
        self.dir = self.root / self.key

    @property
    def complete(self) -> bool:
        return (self.dir / "meta.json").is_file()

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.dir / "meta.json").read_text())

    def ensure(
        self, harvest: Callable[[], Iterable[Tensor]], n_tokens: int, row_values: int = 0
    ) -> bool:
        """Build the entry from `harvest()` ([n, L, D] chunks) unless it exists; return
        True if this call built it. `row_values` (L x D) lets it check the free disk first."""
        if self.complete:
            self.check()
            mark_used(self.root, self.key)
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / f"{self.key}.lock"):
            if self.complete:  # another job built it while we waited
                self.check()
                mark_used(self.root, self.key)
                return False
            self._check_disk(n_tokens * row_values)
            remove_orphans(self.root, held_key=self.key)
            tmp = self.root / f"{self.key}.tmp-{os.getpid()}"
            tmp.mkdir(parents=True)
            stored, have = self.dtype, self._write(harvest(), n_tokens, tmp, self.dtype)
            if have is None:  # float16 overflow: harvest again, into float32
                stored, have = "float32", self._write(harvest(), n_tokens, tmp, "float32")
            assert have is not None
            if have < n_tokens:
                shutil.rmtree(tmp)
                raise NsaeError(
                    f"the training split has only {have} tokens; set "
                    f"data.cache_tokens to at most that"
                )
            meta = {
                **self.fields,
                "format_version": FORMAT_VERSION,
                "n_tokens": n_tokens,
                "requested_dtype": self.dtype,
                "stored_dtype": stored,
                "overflow": stored != self.dtype,
                "key": self.key,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
            for f in tmp.iterdir():
                f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            tmp.rename(self.dir)
            mark_used(self.root, self.key)
            return True

    def _write(self, chunks: Iterable[Tensor], n_tokens: int, tmp: Path, dtype: str) -> int | None:
        """Write the first n_tokens rows of `chunks` to tmp/acts.npy in `dtype`; return how
        many rows there were (at most n_tokens), or None if a float16 value overflowed."""
        arr, have = None, 0
        with progress(n_tokens, f"activation cache ({dtype})", "tokens") as bar:
            for chunk in chunks:
                take = chunk[: n_tokens - have].detach().float().cpu().numpy()
                peak = float(np.abs(take).max()) if take.size else 0.0
                if dtype == "float16" and peak > FLOAT16_MAX:
                    log.warning(
                        "activation cache %s: |x| = %.4g exceeds the float16 range (65504); "
                        "storing float32 instead",
                        self.key,
                        peak,
                    )
                    return None
                if arr is None:
                    arr = np.lib.format.open_memmap(
                        tmp / "acts.npy",
                        mode="w+",
                        dtype=_DTYPES[dtype],
                        shape=(n_tokens, *take.shape[1:]),
                    )
                arr[have : have + len(take)] = take
                have += len(take)
                bar.update(len(take))
                if have >= n_tokens:
                    break
        if arr is not None:
            arr.flush()
        return have

    def _check_disk(self, values: int) -> None:
        """The entry must fit the free disk (checked under the lock, so a build in progress
        by another job is not counted against this one)."""
        need = values * np.dtype(_DTYPES[self.dtype]).itemsize
        free = shutil.disk_usage(self.root).free
        if need > free:
            raise NsaeError(
                f"the activation cache needs {need / 2**30:.2f} GiB but {self.root} has "
                f"{free / 2**30:.2f} GiB free; valid: data.cache=false (stream from the LM), "
                "fewer data.cache_tokens or source.layers, or another data.cache_dir"
            )

    def check(self) -> None:
        """A finished entry must be readable and match its key."""
        try:
            meta = self.meta
            acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise NsaeError(
                f"activation cache {self.dir} is unreadable ({err}); delete it to rebuild"
            ) from None
        if (
            meta.get("key") != self.key
            or len(acts) != meta.get("n_tokens")
            or str(acts.dtype) != meta.get("stored_dtype")
        ):
            raise NsaeError(
                f"activation cache {self.dir} does not match its key; delete it to rebuild"
            )

    def chunks(
        self, chunk_tokens: int, device: torch.device, seed: int, rank: int = 0, world: int = 1
    ) -> Iterator[Tensor]:
        """Endless float32 chunks [chunk_tokens, L, D] on `device`: each epoch visits this
        rank's share of the chunks in a new random order (a function of `seed` only)."""
        acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        starts = np.arange(0, len(acts) - chunk_tokens + 1, chunk_tokens)[rank::world]
        if len(starts) == 0:
            raise NsaeError(
                f"activation cache {self.dir} holds fewer than {chunk_tokens} tokens per rank"
            )
        rng = np.random.default_rng(seed)
        while True:
            for s in rng.permutation(starts):
                block = torch.from_numpy(np.array(acts[s : s + chunk_tokens]))  # a copy
                yield block.to(device, non_blocking=True).float()
