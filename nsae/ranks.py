"""The ranks of one job: which rank this process is, and the DDP ranks nsae starts for it.

Lightning's own DDP launcher re-runs `sys.argv` in every child process. Under Hydra
multirun that argv is the whole sweep (`-m a=1,2 ...`), so each child would re-run every
job; Lightning's Hydra special case only rewrites `hydra.run.dir`, which multirun ignores.
nsae therefore starts the ranks of a job itself, after rank 0 has written the job's
resolved `config.yaml`:

    rank 0 (the Hydra job)  ->  python -m nsae.train --config-path <run dir>
                                --config-name config hydra.run.dir=<run dir>   (ranks 1..N-1)

Each child composes exactly that one job's config; the environment (LOCAL_RANK,
MASTER_ADDR/PORT, WORLD_SIZE) tells Lightning that the processes were created externally,
so Lightning starts none. When the job ends the process group is destroyed, the children
are reaped and the environment restored, so the next job of a sweep starts clean with its
own port, ranks and W&B run. Under Slurm (or torchrun) the cluster starts the ranks and
nsae starts none.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nsae.errors import NsaeError
from nsae.rundir import RunDir


def slurm_tasks() -> int:
    """Tasks in the current Slurm step (0 outside Slurm or in an interactive shell): the
    test Lightning's `SLURMEnvironment.detect()` makes, without the warning that detect()
    prints wherever srun is installed (which would break one-line errors)."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return 0
    return int(os.environ.get("SLURM_NTASKS", 0))


def external_ranks() -> bool:
    """Whether something else (Slurm, torchrun, an nsae rank 0) started this job's ranks."""
    return "LOCAL_RANK" in os.environ or slurm_tasks() > 1


def global_rank() -> int:
    if slurm_tasks() > 1:
        return int(os.environ["SLURM_PROCID"])
    for var in ("RANK", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def n_devices(trainer_cfg: Any) -> int:
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int):
        return devices
    if isinstance(devices, str):
        if devices.isdigit():
            return int(devices)
    elif hasattr(devices, "__len__"):  # a list of device ids
        return len(devices)
    raise NsaeError(f"trainer.devices={devices!r}: give a number of devices or a list of ids")


def check_allocation(trainer_cfg: Any) -> None:
    """Under Slurm, devices x nodes must equal the tasks Slurm started (one per rank)."""
    tasks = slurm_tasks()
    if tasks == 0:
        return
    devices, nodes = n_devices(trainer_cfg), int(trainer_cfg.get("num_nodes", 1))
    if devices * nodes != tasks:
        raise NsaeError(
            f"trainer.devices={devices} x trainer.num_nodes={nodes} does not match the Slurm "
            f"allocation of {tasks} tasks; valid: devices = tasks per node "
            f"({os.environ.get('SLURM_NTASKS_PER_NODE', '?')}), num_nodes = nodes "
            f"({os.environ.get('SLURM_JOB_NUM_NODES', '?')})"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ranks(trainer_cfg: Any, run_dir: RunDir, resume: bool) -> Iterator[None]:
    """Run the body as rank 0 of `trainer.devices` local DDP processes (started here), or
    as it is when there is one device or the ranks were started by someone else. `resume`:
    whether rank 0 resumes from the run's last checkpoint (the children do the same)."""
    ddp = str(trainer_cfg.get("strategy", "")).startswith("ddp")
    n = n_devices(trainer_cfg) if ddp else 1
    if n <= 1 or external_ranks():
        yield
        return
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
        "LOCAL_RANK": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    procs: list[subprocess.Popen] = []
    ended = threading.Event()  # set when this job ends: its watcher must not outlive it
    try:
        for rank in range(1, n):
            cmd = [
                sys.executable,
                "-m",
                "nsae.train",
                f"--config-path={run_dir.path.resolve()}",
                "--config-name=config",
                f"hydra.run.dir={hydra_quote(str(run_dir.path.resolve()))}",
                "hydra.output_subdir=null",
                "hydra/job_logging=stdout",  # nsae adds ddp_rank_<r>.log itself
                f"hydra.job.name=ddp_rank_{rank}",
                f"resume={str(resume).lower()}",
            ]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "LOCAL_RANK": str(rank)}))
        watch = threading.Thread(target=_observe, args=(procs, run_dir, ended), daemon=True)
        watch.start()
        yield
        for rank, proc in enumerate(procs, start=1):
            if proc.wait() != 0:
                raise NsaeError(_rank_failed(rank, proc.returncode, run_dir))
    finally:
        ended.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hydra_quote(value: str) -> str:
    """A Hydra override value that keeps `=`, `,` and the like literal."""
    # Hydra keeps a backslash literally unless it comes before a quote or the closing quote.
    escaped = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), value)
    return f"'{escaped}'"


def _rank_failed(rank: int, code: int, run_dir: RunDir) -> str:
    return f"DDP rank {rank} exited with code {code}; see {run_dir.log(f'ddp_rank_{rank}')}"


def _observe(procs: list[subprocess.Popen], run_dir: RunDir, ended: threading.Event) -> None:
    """If a child rank dies, say which and stop this job instead of letting rank 0 wait
    for it in a collective until the process-group timeout. Stops when the job ends."""
    while not ended.is_set():
        for rank, proc in enumerate(procs, start=1):
            code = proc.poll()
            if code not in (None, 0) and not ended.is_set():
                message = _rank_failed(rank, code, run_dir)
                print(f"nsae: error: {message}", file=sys.stderr, flush=True)
                for other in procs:
                    if other.poll() is None:
                        other.kill()
                os.kill(os.getpid(), signal.SIGTERM)
                return
        if all(proc.poll() == 0 for proc in procs):
            return
        time.sleep(1)


def end_process_group() -> None:
    """Tear down this job's process group so that the next job of a sweep makes its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
