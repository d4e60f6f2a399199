"""Faults during a run, one test each: a kill during the fixed-inputs build, a corrupt
`last.ckpt`, a corrupt fixed-inputs entry, a full disk during the export. Each ends in one
`nsae: error:` line (exit 2) or a clean re-run, never a traceback."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import CHEAP, ROOT, run_cli

pytestmark = pytest.mark.slow


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `nsae: error:` line of a run that exits 2, without a traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("nsae: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def finished_run(tmp_path: Path, name: str = "run") -> tuple[list[str], Path]:
    args = [*CHEAP, f"data.cache_dir={tmp_path / 'cache'}"]
    run_dir = tmp_path / name
    proc = run_cli(*args, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return args, run_dir


def test_a_kill_during_the_fixed_inputs_build_leaves_nothing_a_rerun_trips_on(
    tmp_path: Path,
) -> None:
    """SIGKILL while the entry is being built (its lock exists, the entry does not): the
    same command then builds a complete, readable entry and finishes."""
    args = [*CHEAP, f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    fixed = tmp_path / "cache" / "fixed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsae.train", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(fixed.glob("*.lock")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the fixed inputs were built"
    time.sleep(0.5)  # inside the build (the norm sample, then the evaluation set)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(fixed.glob("*.pt")), "the build finished before the kill: no fault tested"
    assert not (tmp_path / "run" / "metrics.json").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Traceback" not in again.stderr
    entries = list(fixed.glob("*.pt"))
    assert len(entries) == 1 and not list(fixed.glob("*.tmp-*"))
    tensors = torch.load(entries[0], map_location="cpu", weights_only=True)
    assert tensors["eval_ids"].shape[1] == 128 and tensors["norm_sample"].shape[0] == 512
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_corrupt_checkpoint_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    """An interrupted run (a checkpoint, no metrics.json) whose last.ckpt is random bytes:
    resume=true names the checkpoint and what to do, and writes nothing."""
    args, run_dir = finished_run(tmp_path)
    (run_dir / "metrics.json").unlink()  # killed during the final evaluation
    for layer in run_dir.glob("layer_*"):
        shutil.rmtree(layer)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(os.urandom(4096))
    before = hashes(run_dir)
    for extra in (["resume=true"], []):
        line = error_line(run_cli(*args, *extra, f"hydra.run.dir={run_dir}"))
        assert line == (
            f"nsae: error: checkpoint {ckpt} is unreadable (not a checkpoint), so the run "
            "cannot be resumed; delete it and re-run without resume=true to start over, or "
            "choose another hydra.run.dir"
        )
        assert hashes(run_dir) == before  # no failed.json, no log, nothing rewritten
    ckpt.unlink()  # as the line says: the same command starts the run over
    assert run_cli(*args, f"hydra.run.dir={run_dir}").returncode == 0
    assert (run_dir / "metrics.json").is_file()


def test_a_corrupt_fixed_inputs_entry_is_one_line_then_rebuilt(tmp_path: Path) -> None:
    """An entry overwritten with garbage (entries are read-only: it takes a chmod) is named,
    with the fix; after deleting it the same command rebuilds it and finishes."""
    args, _ = finished_run(tmp_path, "first")
    (entry,) = (tmp_path / "cache" / "fixed").glob("*.pt")
    assert not os.access(entry, os.W_OK) or os.geteuid() == 0  # read-only (root ignores it)
    entry.chmod(0o644)
    entry.write_bytes(b"\x80\x04garbage" + os.urandom(2048))
    line = error_line(run_cli(*args, f"hydra.run.dir={tmp_path / 'second'}"))
    assert line == (
        f"nsae: error: fixed inputs {entry} are unreadable (not a torch file); delete the "
        "file to rebuild"
    )
    assert not (tmp_path / "second" / "metrics.json").exists()
    entry.unlink()
    again = run_cli(*args, f"hydra.run.dir={tmp_path / 'third'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert torch.load(entry, map_location="cpu", weights_only=True)["eval_ids"].numel() > 0


# Imported at start-up by every Python process that has this folder on PYTHONPATH: with
# NSAE_TEST_ENOSPC=1, writing a safetensors file fails as on a full disk.
FULL_DISK = """
import errno
import os

if os.environ.get("NSAE_TEST_ENOSPC") == "1":
    import safetensors.torch

    def save_file(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    safetensors.torch.save_file = save_file
"""


def test_a_full_disk_during_the_export_leaves_a_resumable_run(tmp_path: Path) -> None:
    """The disk is full when the trained SAEs are exported. The full disk is simulated: a
    `sitecustomize.py` makes `safetensors.torch.save_file` raise ENOSPC in the run's process
    (filling a real disk takes a loop device or tmpfs mount, i.e. root, which tests do not
    have). One line says so and how to continue; the run is not marked finished; once there
    is space, resume=true finishes it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FULL_DISK)
    run_dir = tmp_path / "run"
    args = [*CHEAP, f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    full = subprocess.run(
        [sys.executable, "-m", "nsae.train", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "NSAE_TEST_ENOSPC": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = error_line(full)
    assert line == (
        f"nsae: error: no space left on device while writing the results into {run_dir}; "
        f"free some space, then finish the run with resume=true hydra.run.dir={run_dir}"
    )
    assert not (run_dir / "metrics.json").exists()  # not marked finished
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "layer_0" / "sae_weights.safetensors").exists()

    refused = run_cli(*args)  # an unfinished run is not overwritten by accident
    assert "holds an interrupted run; continue it with resume=true" in error_line(refused)
    resumed = run_cli(*args, "resume=true")  # space is back (no sitecustomize)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "failed.json").exists()
    assert (run_dir / "layer_0" / "sae_weights.safetensors").is_file()
