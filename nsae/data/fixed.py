"""Fixed inputs: what every job of a sweep computes identically before and after training,
stored once beside the activation cache and reused.

An entry holds, for one LM source: the norm sample (the train split's first
`n_norm_tokens` activations [N, L, D] and each token's context position [N]), the
evaluation contexts [C, T] (all ranks'), their activations [C, T, L, D] and kept-position
mask [C, T], and, for the splice metrics, each layer's zero-ablation terms per token
(`zero_kl_LCT`: KL(P_clean || P_zero); `zero_ce_LCT`: next-token cross-entropy with the
layer zeroed, at positions 0..T-2; see `SpliceMetrics`). The ablation zeroes the layer at
every position, BOS/EOS/pad included, which is also SAEBench's (SAELens'
`standard_zero_ablate_hook` has no mask), so nsae's and SAEBench's metrics share these
terms; only the reconstruction splice differs between them. None of these depend on the SAE,
the loss or the seed, so a sweep's jobs share them: the first job builds the entry (under
an exclusive lock: concurrent jobs wait, then read it) and every job, the first included,
reads the stored tensors, so all of them evaluate on bit-identical inputs.

The key is a hash of everything that changes the stored numbers (`fields`, built by the
datamodule like the activation cache's: model contents, hook site, layers, dtype and
autocast, both splits' contents, token counts, context size, packing and selection rules,
the special-token rule, the LM batch) and `FORMAT_VERSION`; `<key>.json` records them. An
entry is written to a temporary file and renamed into place, then made read-only: it is
never rewritten. `data.reuse_fixed_inputs=false` computes everything in each job instead.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nsae.data.cache import cache_key, locked, mark_used
from nsae.errors import NsaeError

FORMAT_VERSION = 1
# Every entry's tensors; the evaluation adds its own (the zero-ablation terms, which the
# key marks: see `LMActivations._fixed_fields`)
NAMES = ("norm_sample", "norm_positions", "eval_ids", "eval_acts", "eval_keep")


class FixedInputs:
    """One entry: `load_or_build(build)` returns its tensors, building them once per key."""

    def __init__(self, root: str | Path, fields: dict[str, Any]) -> None:
        self.fields = {"kind": "fixed_inputs", "fixed_format": FORMAT_VERSION, **fields}
        self.key = cache_key(self.fields)
        self.dir = Path(root) / "fixed"
        self.path = self.dir / f"{self.key}.pt"
        self.built = False  # whether this process built the entry

    def load_or_build(self, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        if not self.path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            with locked(self.dir / f"{self.key}.lock"):
                if not self.path.is_file():  # nobody built it while we waited
                    self._write(build())
                    self.built = True
        mark_used(self.dir, self.key)
        return self._read()

    def _write(self, tensors: dict[str, Tensor]) -> None:
        missing = set(NAMES) - set(tensors)
        if missing:
            raise NsaeError(f"fixed inputs lack {sorted(missing)}")
        for orphan in self.dir.glob(f"{self.key}.tmp-*"):  # a dead builder's (we hold the lock)
            orphan.unlink(missing_ok=True)
        tmp = self.path.with_name(f"{self.key}.tmp-{os.getpid()}")
        torch.save({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, tmp)
        meta = self.path.with_suffix(".json")
        meta.write_text(json.dumps({**self.fields, "key": self.key}, indent=2, default=str) + "\n")
        tmp.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        tmp.rename(self.path)

    def _read(self) -> dict[str, Tensor]:
        try:
            tensors = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # garbage, a truncated file: torch's own text misleads
            os_reason = isinstance(err, OSError) and err.strerror
            reason = err.strerror if os_reason else "not a torch file"
            raise NsaeError(
                f"fixed inputs {self.path} are unreadable ({reason}); delete the file to rebuild"
            ) from None
        if not set(NAMES) <= set(tensors):
            raise NsaeError(f"fixed inputs {self.path} do not match their format; delete it")
        return tensors
