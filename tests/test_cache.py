"""The on-disk activation cache: built once per key, read back exactly, safe under races,
float16 overflow falls back to float32, orphaned partial builds are cleaned up."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nsae.data.cache import FORMAT_VERSION, ActivationCache
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
    (cache.dir / "acts.npy").chmod(0o644)  # a finished entry is read-only
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


def test_entry_is_read_only_and_meta_records_dtypes(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, FIELDS)
    cache.ensure(lambda: iter(chunks()), 128)
    meta = json.loads((cache.dir / "meta.json").read_text())
    assert meta["key"] == cache.key and meta["format_version"] == FORMAT_VERSION == 2
    assert (meta["requested_dtype"], meta["stored_dtype"], meta["overflow"]) == (
        "float16",
        "float16",
        False,
    )
    assert np.load(cache.dir / "acts.npy").dtype == np.float16
    assert all(not (p.stat().st_mode & 0o222) for p in cache.dir.iterdir())


def test_float16_overflow_falls_back_to_float32(tmp_path: Path, caplog) -> None:
    data = chunks(3)
    data[1][5, 1, 3] = 70_000.0  # beyond float16's largest finite value, 65504
    harvests = []

    def harvest():
        harvests.append(1)
        return iter(data)

    cache = ActivationCache(tmp_path, FIELDS, "float16")
    with caplog.at_level(logging.WARNING, logger="nsae.data.cache"):
        assert cache.ensure(harvest, 192) is True
    assert len(harvests) == 2  # harvested again into float32
    assert [r.getMessage() for r in caplog.records if "float16" in r.getMessage()] == [
        f"activation cache {cache.key}: |x| = 7e+04 exceeds the float16 range (65504); "
        "storing float32 instead"
    ]
    stored = np.load(cache.dir / "acts.npy")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, torch.cat(data).numpy())  # nothing rounded
    meta = json.loads((cache.dir / "meta.json").read_text())
    assert (meta["requested_dtype"], meta["stored_dtype"], meta["overflow"]) == (
        "float16",
        "float32",
        True,
    )
    # the entry is keyed by the requested dtype, and reads back as it was stored
    assert ActivationCache(tmp_path, FIELDS, "float16").ensure(lambda: 1 / 0, 192) is False
    torch.testing.assert_close(
        next(cache.chunks(192, torch.device("cpu"), seed=0)), torch.cat(data), rtol=0, atol=0
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphaned_partial_builds_are_removed_by_the_next_build(tmp_path: Path) -> None:
    other = ActivationCache(tmp_path, {"model": "other"})
    dead = tmp_path / f"{other.key}.tmp-{dead_pid()}"
    (dead / "junk").mkdir(parents=True)
    mine = ActivationCache(tmp_path, FIELDS)
    stale_mine = tmp_path / f"{mine.key}.tmp-{dead_pid()}"
    stale_mine.mkdir()
    # a build in progress elsewhere: its key's lock is held by a live process
    live_key = ActivationCache(tmp_path, {"model": "live"}).key
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; fh = open(sys.argv[1], 'a'); "
            "fcntl.flock(fh, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(tmp_path / f"{live_key}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        live = tmp_path / f"{live_key}.tmp-{holder.pid}"
        live.mkdir()
        assert mine.ensure(lambda: iter(chunks()), 128) is True
        assert not dead.exists() and not stale_mine.exists()
        assert live.is_dir()  # not an orphan: its builder still holds the lock
    finally:
        holder.kill()
        holder.wait()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name)
    assert leftovers == [live.name]
    assert os.path.isdir(mine.dir)


def test_file_digests_are_remembered_by_path_size_and_mtime(tmp_path: Path) -> None:
    from nsae.data.fingerprint import DIGEST_INDEX, file_digest

    f = tmp_path / "data.txt"
    f.write_text("abc\n")
    os.utime(f, ns=(10**18, 10**18))  # an old file: not "racily" recent
    want = hashlib.sha256(b"abc\n").hexdigest()
    assert file_digest(f, tmp_path) == want
    index = json.loads((tmp_path / DIGEST_INDEX).read_text())
    assert index[str(f.resolve())]["sha256"] == want
    f.write_text("xyz\n")  # same size; with the old mtime restored the index is trusted
    os.utime(f, ns=(10**18, 10**18))
    assert file_digest(f, tmp_path) == want
    os.utime(f, ns=(10**18 + 1, 10**18 + 1))  # a changed mtime: hashed again
    assert file_digest(f, tmp_path) == hashlib.sha256(b"xyz\n").hexdigest()
    g = tmp_path / "fresh.txt"  # modified just now: never trusted from the index
    g.write_text("one\n")
    assert file_digest(g, tmp_path) == hashlib.sha256(b"one\n").hexdigest()
    g.write_text("two\n")
    assert file_digest(g, tmp_path) == hashlib.sha256(b"two\n").hexdigest()


def test_unknown_hub_model_is_unresolved(tmp_path: Path) -> None:
    from nsae.data.fingerprint import model_fingerprint

    got = model_fingerprint("nsae-test/no-such-model", tmp_path)
    assert got == {"hub": "nsae-test/no-such-model", "revision": "unresolved"}


def test_a_cache_larger_than_the_free_disk_is_refused_before_building(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    cache = ActivationCache(tmp_path / "cache", {"model": "m"}, "float16")
    called = []
    with pytest.raises(NsaeError, match=r"needs .* GiB but .* GiB free; valid: data.cache=false"):
        cache.ensure(lambda: called.append(1) or iter([]), free // 2 + 1, row_values=4)
    assert not called and not list((tmp_path / "cache").glob("*.tmp-*"))
