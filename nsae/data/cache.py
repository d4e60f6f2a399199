"""The on-disk activation cache, shared by the jobs of a sweep.

A cache entry holds the activations of a split's first `n_tokens` tokens as one
memory-mappable `.npy` array [N, L, D], keyed by everything that determines them (model,
dataset, split, layers, hook site, context size, token count, dtype, special-token rule).
It is written into a temporary directory and renamed into place, under an exclusive file
lock: of several jobs that need the same entry, one harvests while the others wait, then all
read the same file. A finished entry is never rewritten.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nsae.errors import NsaeError

FORMAT_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_key(fields: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def model_fingerprint(name: str) -> str:
    """A local model's config and weight files (names, sizes, mtimes); a hub name as is."""
    path = Path(name)
    if not path.is_dir():
        return name
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors", ".bin"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ActivationCache:
    """One cache entry: `ensure()` builds it once; `chunks()` reads it back."""

    def __init__(self, root: str | Path, fields: dict[str, Any], dtype: str = "float16") -> None:
        if dtype not in _DTYPES:
            raise NsaeError(f"data.cache_dtype={dtype!r}; valid: {', '.join(_DTYPES)}")
        self.fields, self.dtype = {**fields, "dtype": dtype}, dtype
        self.key = cache_key(self.fields)
        self.dir = Path(root) / self.key

    @property
    def complete(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def ensure(self, harvest: Callable[[], Iterable[Tensor]], n_tokens: int) -> bool:
        """Build the entry from `harvest()` ([n, L, D] chunks) unless it exists; return
        True if this call built it."""
        if self.complete:
            self.check()
            return False
        with _locked(self.dir.with_name(self.key + ".lock")):
            if self.complete:  # another job built it while we waited
                self.check()
                return False
            tmp = self.dir.with_name(f"{self.key}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            arr, have = None, 0
            for chunk in harvest():
                take = chunk[: n_tokens - have].cpu().numpy().astype(_DTYPES[self.dtype])
                if arr is None:
                    arr = np.lib.format.open_memmap(
                        tmp / "acts.npy",
                        mode="w+",
                        dtype=_DTYPES[self.dtype],
                        shape=(n_tokens, *take.shape[1:]),
                    )
                arr[have : have + len(take)] = take
                have += len(take)
                if have >= n_tokens:
                    break
            if arr is None or have < n_tokens:
                shutil.rmtree(tmp)
                raise NsaeError(
                    f"the training split has only {have} tokens; set "
                    f"data.cache_tokens to at most that"
                )
            arr.flush()
            del arr
            meta = {**self.fields, "n_tokens": n_tokens, "key": self.key}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
            tmp.rename(self.dir)
            return True

    def check(self) -> None:
        """A finished entry must be readable and match its key."""
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
            acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise NsaeError(
                f"activation cache {self.dir} is unreadable ({err}); delete it to rebuild"
            ) from None
        if meta.get("key") != self.key or len(acts) != meta.get("n_tokens"):
            raise NsaeError(
                f"activation cache {self.dir} does not match its key; delete it to rebuild"
            )

    def chunks(
        self,
        chunk_tokens: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world: int = 1,
        skip: int = 0,
    ) -> Iterator[Tensor]:
        """Endless float32 chunks [chunk_tokens, L, D] on `device`: each epoch visits this
        rank's share of the chunks in a new random order. The first `skip` chunks of the
        sequence are passed over without being read (resuming at a data position)."""
        acts = np.load(self.dir / "acts.npy", mmap_mode="r")
        starts = np.arange(0, len(acts) - chunk_tokens + 1, chunk_tokens)[rank::world]
        if len(starts) == 0:
            raise NsaeError(
                f"activation cache {self.dir} holds fewer than {chunk_tokens} tokens per rank"
            )
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(starts)
            if skip >= len(order):
                skip -= len(order)
                continue
            order, skip = order[skip:], 0
            for s in order:
                block = torch.from_numpy(np.array(acts[s : s + chunk_tokens]))  # a copy
                yield block.to(device, non_blocking=True).float()
