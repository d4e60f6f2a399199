"""The on-disk activation cache: built once per key, read back exactly, safe under races."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nsae.data.cache import ActivationCache
from nsae.errors import NsaeError

FIELDS = {"model": "m", "layers": [0, 1]}


def chunks(n_chunks: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 2, 8, generator=g) for _ in range(n_chunks)]


def test_build_once_then_read_back(tmp_path: Path) -> None:
    data = chunks()
    cache = ActivationCache(tmp_path, FIELDS, "float32")
    assert cache.ensure(lambda: iter(data), 300) is True
    assert ActivationCache(tmp_path, FIELDS, "float32").ensure(lambda: 1 / 0, 300) is False
    stored = np.load(cache.dir / "acts.npy")
    np.testing.assert_array_equal(stored, torch.cat(data)[:300].numpy())
    it = cache.chunks(100, torch.device("cpu"), seed=0)
    epoch = torch.cat([next(it) for _ in range(3)])
    # one epoch visits every chunk once, in some order
    assert sorted(epoch[:, 0, 0].tolist()) == sorted(torch.cat(data)[:300, 0, 0].tolist())


@pytest.mark.parametrize("skip", [0, 2, 3, 7])
def test_resuming_at_a_data_position_continues_the_same_sequence(tmp_path, skip) -> None:
    cache = ActivationCache(tmp_path, FIELDS, "float32")
    cache.ensure(lambda: iter(chunks()), 300)  # 3 chunks of 100 per epoch
    full = cache.chunks(100, torch.device("cpu"), seed=5)
    expected = [next(full) for _ in range(skip + 4)][skip:]
    resumed = cache.chunks(100, torch.device("cpu"), seed=5, skip=skip)
    for want in expected:
        torch.testing.assert_close(next(resumed), want, rtol=0, atol=0)


def test_key_depends_on_fields_and_dtype(tmp_path: Path) -> None:
    a = ActivationCache(tmp_path, FIELDS)
    assert a.key != ActivationCache(tmp_path, {**FIELDS, "layers": [0]}).key
    assert a.key != ActivationCache(tmp_path, FIELDS, "float32").key


def test_too_few_tokens_and_bad_dtype(tmp_path: Path) -> None:
    with pytest.raises(NsaeError, match="has only 320 tokens"):
        ActivationCache(tmp_path, FIELDS).ensure(lambda: iter(chunks()), 10_000)
    assert not any(tmp_path.iterdir()) or all(p.suffix == ".lock" for p in tmp_path.iterdir())
    with pytest.raises(NsaeError, match="valid: float16, float32"):
        ActivationCache(tmp_path, FIELDS, "int8")


def test_corrupt_entry_is_one_clear_error(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, FIELDS)
    cache.ensure(lambda: iter(chunks()), 128)
    (cache.dir / "acts.npy").write_bytes(b"garbage")
    with pytest.raises(NsaeError, match=r"is unreadable .*delete it to rebuild"):
        ActivationCache(tmp_path, FIELDS).ensure(lambda: iter(chunks()), 128)


def _race(root: str, counter: str, barrier) -> None:
    def slow_harvest():
        with open(counter, "a") as fh:
            fh.write("built\n")
        for c in chunks():
            time.sleep(0.05)
            yield c

    barrier.wait()
    ActivationCache(root, FIELDS).ensure(slow_harvest, 256)


def test_concurrent_jobs_build_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    counter = tmp_path / "builds.txt"
    procs = [
        ctx.Process(target=_race, args=(str(tmp_path / "c"), str(counter), barrier))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.read_text().count("built") == 1
    entries = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
