"""`python -m nsae.cache`: lists the real entries the cache classes write (activations and
fixed inputs), removes chosen ones or those unused for a while, and never one whose build
lock a job holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from nsae.cache import main
from nsae.data.cache import ActivationCache, locked
from nsae.data.fixed import NAMES, FixedInputs

DAY = 86400


def build(root: Path) -> tuple[ActivationCache, ActivationCache, FixedInputs]:
    """Two activation entries (300 and 200 tokens, float32: 2 layers x 8) and one fixed."""
    data = [torch.randn(100, 2, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    a = ActivationCache(root, {"model": "m", "layers": [0, 1]}, "float32")
    b = ActivationCache(root, {"model": "m", "layers": [1, 2]}, "float32")
    assert a.ensure(lambda: iter(data), 300) and b.ensure(lambda: iter(data), 200)
    fixed = FixedInputs(root, {"model": "m", "layers": [0, 1], "n_norm_tokens": 4})
    fixed.load_or_build(lambda: {name: torch.zeros(4) for name in NAMES})
    return a, b, fixed


def age(root: Path, key: str, days: float) -> None:
    """Make `key`'s last use `days` ago."""
    then = time.time() - days * DAY
    os.utime(root / f"{key}.used", (then, then))


def test_list_shows_every_entry_with_its_size_tokens_layers_and_use(tmp_path: Path, capsys) -> None:
    a, b, fixed = build(tmp_path)
    age(tmp_path, a.key, 3)
    capsys.readouterr()  # (the builds' progress lines)
    assert main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:-1]}
    assert set(rows) == {a.key, b.key, fixed.key}
    size_a = (a.dir / "acts.npy").stat().st_size + (a.dir / "meta.json").stat().st_size
    assert 300 * 2 * 8 * 4 < size_a < 300 * 2 * 8 * 4 + 4096  # float32 rows, header, meta
    kb = f"{size_a / 1024:.1f}"
    assert rows[a.key][1:] == ["activations", kb, "KB", "m", "-", "300", "0,1", "3d", "ago"]
    assert rows[b.key][6:8] == ["200", "1,2"]
    assert rows[fixed.key][1] == "fixed" and rows[fixed.key][-2:] == ["just", "now"]
    assert out[-1].startswith("3 entries, ") and out[-1].endswith(f"in {tmp_path}")


def test_prune_removes_only_entries_unused_for_the_given_time(tmp_path: Path, capsys) -> None:
    a, b, fixed = build(tmp_path)
    age(tmp_path, a.key, 10)
    age(tmp_path / "fixed", fixed.key, 8)
    assert main(["--dir", str(tmp_path), "prune", "--unused-for", "7d"]) == 0
    out = capsys.readouterr().out
    assert f"removed activations {a.key}" in out and f"removed fixed {fixed.key}" in out
    assert not a.dir.exists() and not fixed.path.exists()
    assert not fixed.path.with_suffix(".json").exists()
    assert b.complete  # used just now: kept, and still readable
    assert ActivationCache(tmp_path, b.fields, "float32").ensure(lambda: 1 / 0, 200) is False


def test_an_entry_being_built_is_kept(tmp_path: Path, capsys) -> None:
    """A job holds `<key>.lock` while it builds: prune --all and remove keep that entry, and
    the list marks it."""
    a, b, _ = build(tmp_path)
    with locked(tmp_path / f"{a.key}.lock"):
        assert main(["--dir", str(tmp_path)]) == 0
        listed = capsys.readouterr().out
        assert "(locked: being built)" in next(ln for ln in listed.splitlines() if a.key in ln)
        assert main(["--dir", str(tmp_path), "prune", "--all"]) == 0
        out = capsys.readouterr().out
        assert f"kept activations {a.key}: a job holds its build lock" in out
        assert f"removed activations {b.key}" in out
    assert a.complete and not b.dir.exists()


def test_remove_by_unique_prefix_and_bad_input(tmp_path: Path, capsys) -> None:
    a, b, fixed = build(tmp_path)
    assert main(["--dir", str(tmp_path), "remove", a.key[:6]]) == 0
    assert not a.dir.exists() and b.complete and fixed.path.exists()
    capsys.readouterr()
    assert main(["--dir", str(tmp_path), "remove", "zzzz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nsae: error: zzzz: no entry with this key; valid: ") and b.key in err
    assert main(["--dir", str(tmp_path), "prune", "--unused-for", "3x"]) == 2
    assert "valid: a number and a unit" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path / "nope")]) == 2
    assert b.complete and fixed.path.exists()  # bad input removed nothing


def test_the_command_line_runs_as_a_module(tmp_path: Path) -> None:
    build(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "nsae.cache", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("3 entries")
