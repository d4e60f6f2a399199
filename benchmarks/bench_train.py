"""nsae training steps/s from cached activations against a bare PyTorch loop doing the same
SAE-bank math (same layers, d, features, batch, Adam, decoder constraint), in one run.

    python benchmarks/bench_train.py [--sae-type none] [--steps 150] [--layers 4 --d 128]

The bare loop is the floor any framework pays for: forward, loss, backward, gradient
projection, Adam, renormalisation. nsae adds Lightning's loop, the shuffle buffer reading
from an on-disk cache, and the per-step training metrics.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from common import bare_step
from omegaconf import OmegaConf

from nsae.data.buffer import ShuffleBuffer
from nsae.data.cache import ActivationCache
from nsae.data.norms import norm_statistics
from nsae.loss import SAELoss
from nsae.module import SAEModule
from nsae.saes import build_sae


class CachedData(L.LightningDataModule):
    """Activations served as nsae serves them from a cache: chunks -> shuffle buffer."""

    def __init__(
        self,
        cache: ActivationCache,
        sample: torch.Tensor,
        layers: list[int],
        batch: int,
        chunk: int,
    ) -> None:
        super().__init__()
        self.cache, self.norm_sample = cache, sample
        self.norm_stats = norm_statistics(sample, layers)
        self.data = OmegaConf.create({"batch_size": batch})
        self.chunk = chunk

    def train_dataloader(self) -> ShuffleBuffer:
        chunks = self.cache.chunks(self.chunk, torch.device("cpu"), seed=0)
        return ShuffleBuffer(chunks, 16 * self.data.batch_size, self.data.batch_size)


def bare_loop(
    sae_type: str, kwargs: dict, batches: list[torch.Tensor], layers: int, d: int, m: int
) -> float:
    torch.manual_seed(0)
    sae = build_sae(sae_type, layers, d, m, **kwargs)
    loss_fn = SAELoss("none", torch.full((layers,), 1.0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    start = time.perf_counter()
    for x in batches:
        bare_step(sae, loss_fn, opt, x)
    return len(batches) / (time.perf_counter() - start)


def nsae_loop(
    sae_type: str, kwargs: dict, dm: CachedData, steps: int, layers: int, d: int, m: int
) -> float:
    torch.manual_seed(0)
    cfg = OmegaConf.create(
        {
            "coeff": {"mode": "alpha", "alpha": 1.0, "k": None},
            "optim": {"lr": 1e-3, "betas": [0.9, 0.999]},
            "metrics": {
                "train": ["l0", "l1", "mse", "fvu"],
                "train_every_n_steps": 5,  # as in conf/config.yaml
                "eval": [],
                "splice": False,
                "dead_window_tokens": 10**6,
            },
        }
    )
    module = SAEModule(
        build_sae(sae_type, layers, d, m, **kwargs),
        list(range(layers)),
        "none",
        cfg.coeff,
        cfg.optim,
        cfg.metrics,
    )

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, *a) -> None:
            if trainer.global_step == 10:  # skip start-up: buffer fill, first allocations
                self.t0 = time.perf_counter()

    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps + 10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=50,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    return steps / (time.perf_counter() - timer.t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sae-type", default="none")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    L_, D, M, B = args.layers, args.d, args.d * args.expansion, args.batch
    kwargs = {"noise_std": 0.1} if args.sae_type == "normalized_sae" else {}
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(64 * B, L_, D, generator=g) * torch.linspace(5, 25, L_).view(1, L_, 1)
    batches = [acts[torch.randint(0, len(acts), (B,), generator=g)] for _ in range(args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache(tmp, {"bench": "train"}, "float16")
        cache.ensure(lambda: iter(acts.split(4096)), len(acts))
        dm = CachedData(cache, acts[:4096], list(range(L_)), B, 4096)
        bare, fw = [], []
        for _ in range(args.rounds):  # alternate, so both see the same machine noise
            bare.append(bare_loop(args.sae_type, kwargs, batches, L_, D, M))
            fw.append(nsae_loop(args.sae_type, kwargs, dm, args.steps, L_, D, M))
    print(
        f"{args.sae_type}: L={L_} d={D} features={M} batch={B}, threads {torch.get_num_threads()}"
    )
    # Each round times both back to back; the median of the per-round ratios is robust to
    # the other load that comes and goes on a shared machine.
    ratios = sorted(f / b for f, b in zip(fw, bare, strict=True))
    print(f"  bare PyTorch loop {statistics.median(bare):7.2f} steps/s (median of {len(bare)})")
    print(f"  nsae (Lightning)  {statistics.median(fw):7.2f} steps/s")
    print(f"  per-round ratios  {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"nsae/bare ratio {statistics.median(ratios):.3f} (median; target >= 0.9)")


if __name__ == "__main__":
    main()
