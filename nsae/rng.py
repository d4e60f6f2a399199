"""Random state a job owns, so that jobs sharing a process (hydra/launcher=nsae_bank, one
thread per job) draw exactly what they would draw alone.

Alone, a job seeds the global generator, builds its SAE from it and then draws its training
noise from it. In a bank, `job_rng(owned=True)` seeds and builds under a process-wide lock
and then hands the thread a generator that continues from the state the build left: the
same sequence the job's training noise would have come from alone. `randn` and
`get_state`/`set_state` (checkpoints) use the thread's generator when it has one, else the
global one. `GLOBAL_LOCK` also serialises code that reseeds the global generator under
`torch.random.fork_rng` (the synthetic source's sampling). The contract: in a bank, every
draw from the global generator holds `GLOBAL_LOCK`, so none lands inside another job's
seeding block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

GLOBAL_LOCK = threading.RLock()
_local = threading.local()


def _own() -> dict[str, torch.Generator] | None:
    return getattr(_local, "generators", None)


@contextmanager
def job_rng(owned: bool) -> Iterator[None]:
    """Around a job's seeding and model building. owned=False: nothing changes (the global
    generator). owned=True: the block runs under `GLOBAL_LOCK`, and afterwards this thread
    draws from its own copies of the global generators' state at the block's end."""
    if not owned:
        yield
        return
    with GLOBAL_LOCK:
        yield
        gens = {"cpu": torch.Generator().set_state(torch.get_rng_state())}
        if torch.cuda.is_available():  # (seed_everything seeded it, lazily)
            cuda = torch.Generator(device="cuda")
            gens["cuda"] = cuda.set_state(torch.cuda.get_rng_state())
        _local.generators = gens


def release() -> None:
    """This thread draws from the global generators again (a bank job's end)."""
    _local.generators = None


def _generator(device: torch.device) -> torch.Generator | None:
    own = _own()
    return None if own is None else own.get(device.type)


def randn(shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """torch.randn from this thread's generator (or the global one)."""
    return torch.randn(shape, dtype=dtype, device=device, generator=_generator(device))


def get_state(device: torch.device) -> dict[str, Any]:
    """The state a checkpoint saves: {"cpu": ..., "cuda": ... on a CUDA device}."""
    own = _own()
    state = {"cpu": own["cpu"].get_state() if own else torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = (
            own["cuda"].get_state() if own and "cuda" in own else (torch.cuda.get_rng_state(device))
        )
    return state


def set_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `get_state` saved (a resumed run, right before its first step)."""
    own = _own()
    if own:
        own["cpu"].set_state(state["cpu"])
    else:
        torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        if own and "cuda" in own:
            own["cuda"].set_state(state["cuda"])
        else:
            torch.cuda.set_rng_state(state["cuda"], device)
