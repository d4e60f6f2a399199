"""Metrics are exact under DDP: 2 gloo processes on CPU give the 1-process values."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nsae.metrics import (
    METRICS,
    NormBinnedMetrics,
    RecentFiring,
    SAEBenchMetrics,
    SAEMetrics,
    SpliceMetrics,
    decile_edges,
)

L, D, M, V, B = 3, 6, 10, 7, 128
STEP_TOKENS = 32  # tokens per training step, over all ranks


def fixed_data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, D, generator=g) * torch.tensor([1.0, 5.0, 30.0]).view(1, L, 1)
    x_hat = 0.9 * x + torch.randn(B, L, D, generator=g)
    f = torch.relu(torch.randn(B, L, M, generator=g) - 1.0)
    ids = torch.randint(0, V, (8, 5), generator=g)
    ids[:, 0] = 0  # BOS
    logits = torch.randn(3, 8, 5, V, generator=g)  # clean, recon, zero
    return x, x_hat, f, ids, logits


def evaluate(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Each step, each rank takes its share of that step's tokens (and of the contexts);
    compute() syncs across ranks."""
    x, x_hat, f, ids, logits = fixed_data()
    metrics, splice = SAEMetrics(list(METRICS), L, D, M), SpliceMetrics(L)
    recent, saebench = RecentFiring(L, D, M), SAEBenchMetrics(L, M)
    pos0 = torch.arange(B) % 16 == 0  # contexts of 16 tokens
    binned = NormBinnedMetrics(L, decile_edges(x.norm(dim=-1)[~pos0]))
    for step_idx in torch.arange(B).split(STEP_TOKENS):
        idx = step_idx[rank::world]
        b = metrics.update(x[idx], x_hat[idx], f[idx])
        recent.update(b)
        saebench.update(b, ~pos0[idx])
        binned.update(b, pos0[idx])
    ctx = torch.arange(rank, 8, world)
    for j in range(L):
        splice.update_from_logits(
            j, ids[ctx], *(logits[k, ctx] for k in range(3)), mask_BT=ids[ctx] != 0
        )
    out = metrics.compute() | splice.compute() | saebench.compute()
    out |= {f"binned/{k}": v for k, v in binned.compute().items()}
    out["dead_fraction"] = recent.dead_fraction(window_steps=2)
    return out


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        values = evaluate(rank, world)
        if rank == 0:
            torch.save(values, out_path)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one(tmp_path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    single = evaluate(0, 1)
    assert set(ddp) == set(single)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-6, atol=1e-12, msg=name)
