"""Memory estimates: what a job's training holds, and what the training device has free.

Used before anything runs (`check_memory`, in `nsae.checks.validate`) and by the cohort
launcher to size its cohorts (`nsae.cohort.plan_cohorts`)."""

from __future__ import annotations

import os
from typing import Any

from nsae.errors import NsaeError


def available_memory(accelerator: str) -> tuple[int, str]:
    """(bytes available, what) on the device training will use."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "free GPU memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "available RAM"


def memory_parts(cfg: Any, n_layers: int, d_model: int) -> tuple[int, int]:
    """Bytes of a job's training: (the SAE bank's weights, gradients and Adam state (4
    copies) and one step's activations; the shuffle buffer), in float32."""
    M = d_model * int(cfg.sae.expansion_factor)
    params = n_layers * (2 * d_model * M + M + d_model)
    step = cfg.data.batch_size * n_layers * (3 * M + 4 * d_model)
    return 4 * (4 * params + step), 4 * cfg.data.buffer_tokens * n_layers * d_model


def check_memory(cfg: Any, n_layers: int, d_model: int) -> None:
    """The SAE bank's weights, gradients and Adam state, the shuffle buffer and one step's
    activations (`memory_parts`) must fit the training device."""
    need = sum(memory_parts(cfg, n_layers, d_model))
    have, what = available_memory(str(cfg.trainer.get("accelerator", "auto")))
    if what == "available RAM" and str(cfg.trainer.get("strategy", "")).startswith("ddp"):
        need *= max(int(cfg.trainer.get("devices", 1)), 1)  # one bank per CPU process
    if need > have:
        raise NsaeError(
            f"the SAE bank needs about {need / 2**30:.2f} GiB (weights, gradients, Adam "
            f"state, the shuffle buffer and one step) but the device has {have / 2**30:.2f} "
            f"GiB {what}; valid: fewer source.layers, a smaller sae.expansion_factor, "
            "data.buffer_tokens or data.batch_size"
        )


def _parts(cfg: Any) -> tuple[int, int]:
    from nsae.config import resolve_layers, source_shape

    n_layers, _, d_model = source_shape(cfg.source)
    return memory_parts(cfg, len(resolve_layers(cfg.source.layers, n_layers)), d_model)


def job_bytes(cfg: Any) -> int:
    """A job's own memory in a cohort: its SAEs' weights, gradients and Adam state and one
    step's activations (`memory_parts`)."""
    return _parts(cfg)[0]


def max_lead(cfg: Any) -> int:
    """Batches a cohort's stream harvests ahead of its slowest job: a buffer's worth."""
    return max(8, int(cfg.data.buffer_tokens) // int(cfg.data.batch_size))


def shared_bytes(cfg: Any) -> int:
    """What a cohort holds once: the shuffle buffer and the batches harvested ahead."""
    return 2 * _parts(cfg)[1]
