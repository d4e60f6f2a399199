"""Exact resume: a stream resumed after k consumed batches serves, bit for bit, what the
uninterrupted stream served from batch k on (shuffle buffer, datamodule with and without
the activation cache, and a real Lightning fit resumed from a mid-run checkpoint)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nsae.data.buffer import ShuffleBuffer
from tests.test_data_module import data_cfg, make_dm


def chunk_stream(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    while True:  # chunks of uneven length, as with excluded special tokens
        yield torch.randn(int(torch.randint(20, 90, (1,), generator=g)), 2, 3, generator=g)


def take(it, n: int) -> list[torch.Tensor]:
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("k", [0, 1, 4, 7, 13])
def test_buffer_resumed_at_k_serves_batches_k_on(k: int) -> None:
    # capacity 256, batch 32: 4 batches per round, so k crosses rounds and lands mid-round
    full = take(iter(ShuffleBuffer(chunk_stream(), 256, 32, seed=3)), k + 6)
    resumed = ShuffleBuffer(chunk_stream(), 256, 32, seed=3, skip_batches=k)
    for want, got in zip(full[k:], take(iter(resumed), 6), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert resumed.batches_served == k + 6


@pytest.mark.parametrize("cache", [True, False])
def test_datamodule_stream_resumes_exactly(tmp_path: Path, cache: bool) -> None:
    data = data_cfg(tmp_path, cache=cache)
    dm = make_dm(data)
    full = take(iter(dm.train_dataloader()), 14)  # 4 rounds of 4 batches of 64 tokens
    state = dm.state_dict()
    assert state["batches_consumed"] == 0  # no trainer: nothing was consumed by a step
    again = make_dm(data)
    again.load_state_dict({**state, "batches_consumed": 9})
    resumed = take(iter(again.train_dataloader()), 5)
    for want, got in zip(full[9:], resumed, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class Recorder(L.LightningModule):
    """A trivial model that records every training batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, _idx: int) -> torch.Tensor:
        self.seen.append(batch.clone())
        return (self.w * batch.mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm, max_steps: int, ckpt_dir: Path, ckpt_path: str | None = None) -> Recorder:
    module = Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[ModelCheckpoint(ckpt_dir, "{step}", save_top_k=-1, every_n_train_steps=3)],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("cache", [True, False])
def test_lightning_fit_resumed_from_checkpoint_sees_the_same_batches(
    tmp_path: Path, cache: bool
) -> None:
    """Lightning restores global_step before it builds the train loader (the datamodule
    counts consumed batches from it; the loop's prefetch does not count)."""
    data = data_cfg(tmp_path, cache=cache)
    full = fit(make_dm(data), 8, tmp_path / "ckpt").seen
    resumed_dm = make_dm(data)
    resumed = fit(resumed_dm, 8, tmp_path / "ckpt2", str(tmp_path / "ckpt" / "step=3.ckpt"))
    assert len(full) == 8 and len(resumed.seen) == 5
    for want, got in zip(full[3:], resumed.seen, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert resumed_dm.buffer is not None and resumed_dm.buffer.skip_batches == 3
    ckpt = torch.load(tmp_path / "ckpt2" / "step=6.ckpt", weights_only=False)
    assert ckpt["ActivationDataModule"]["batches_consumed"] == ckpt["global_step"] == 6


@pytest.mark.parametrize("cache", [True, False])
def test_data_loading_leaves_the_global_rng_alone(tmp_path: Path, cache: bool) -> None:
    """Validation loaders and the train stream (with its replay) draw nothing from the
    global torch RNG, whose stream the training noise uses."""
    dm = make_dm(data_cfg(tmp_path, cache=cache))
    dm.load_state_dict({**dm.state_dict(), "batches_consumed": 5})
    before = torch.get_rng_state()
    take(iter(dm.train_dataloader()), 3)
    for _ in range(2):
        list(dm.val_dataloader())
    assert torch.equal(torch.get_rng_state(), before)
