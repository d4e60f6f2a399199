"""`python -m nsae.train`: harvest, train one SAE per layer, evaluate, export.

    python -m nsae.train                                   # the embedded default
    python -m nsae.train -m sae_type=none,normalized_sae normalization_method=none,input_norm

Before Hydra starts, the command is checked (`nsae.cli`, `nsae.preflight`): a bad job, or
one that would touch an earlier run, stops it with one line. Hydra then hands each job to
`main`, which runs it (`nsae.job`) into its run directory (`nsae.rundir`). In a sweep a job
that fails leaves `failed.json` and the others go on; the sweep ends with a summary and a
non-zero exit if any job failed.
"""

from __future__ import annotations

import signal
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nsae import cli
from nsae.errors import WorkersInterrupted


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One job, as Hydra's launcher hands it over."""
    from nsae.console import quiet_dependencies, tag_jobs
    from nsae.launchers import kind_of
    from nsae.outcome import run_and_report
    from nsae.rundir import RunDir
    from nsae.sweep import sweep_stop_requested

    quiet_dependencies()  # (after Hydra has configured logging)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    in_worker = kind_of(str(hc.launcher.get("_target_", ""))) == "parallel"
    if in_worker:
        # Ctrl-C must not break the worker between jobs (loky would fail the whole pool):
        # a job stops on GracefulStop's handler while it trains, or on the sweep's stop file.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if sweep_stop_requested():
            raise WorkersInterrupted(f"{run_dir.name}: not started, the sweep was interrupted")
    multirun = hc.mode == RunMode.MULTIRUN
    with tag_jobs(hc.job.num if multirun else None):  # in a sweep, each line names its job
        run_and_report(cfg, RunDir(run_dir), multirun, hc.job.name, in_worker)


if __name__ == "__main__":
    cli.main(main)
