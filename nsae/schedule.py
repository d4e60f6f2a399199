"""Schedules over training steps: the learning rate and the sparsity coefficient.

Learning rate (`optim.warmup_steps`, `optim.decay`, `optim.min_lr_ratio`), as a factor of
`optim.lr` at step t (the step about to be taken, 0-based), T = trainer.max_steps,
W = warmup steps, r = min_lr_ratio:

    t < W:             (t + 1) / W                                  linear warmup
    decay=none:        1
    decay=linear:      r + (1 - r) * (1 - u),        u = (t - W) / max(T - W, 1)
    decay=cosine:      r + (1 - r) * (1 + cos(pi u)) / 2

Sparsity coefficient (`coeff.warmup_steps` = V): c_l(t) = c_l * min(1, (t + 1) / V), so the
SAE first learns to reconstruct (as in SAELens' and dictionary_learning's L1 warm-up).
"""

from __future__ import annotations

import math

from nsae.errors import NsaeError

DECAYS = ("none", "linear", "cosine")


def lr_factor(
    step: int, total: int, warmup: int = 0, decay: str = "none", min_ratio: float = 0.0
) -> float:
    """The learning-rate multiplier at `step` (see the module docstring)."""
    if decay not in DECAYS:
        raise NsaeError(f"optim.decay={decay!r}; valid: {', '.join(DECAYS)}")
    if step < warmup:
        return (step + 1) / warmup
    if decay == "none":
        return 1.0
    u = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    shape = 1 - u if decay == "linear" else (1 + math.cos(math.pi * u)) / 2
    return min_ratio + (1 - min_ratio) * shape


def coeff_factor(step: int, warmup: int = 0) -> float:
    """The sparsity-coefficient multiplier at `step`."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
