"""The process-topology helpers: rank, allocation checks, and the child ranks' overrides.
(The real DDP and Slurm runs are in test_ddp.py and test_slurm.py.)"""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from nsae.errors import NsaeError
from nsae.ranks import check_allocation, external_ranks, global_rank, hydra_quote, n_devices

SLURM_VARS = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "LOCAL_RANK", "RANK")


@pytest.fixture
def env(monkeypatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "path",
    ["/o/0_none_none_alpha_alpha=2.0", "/o/a,b", "/o/it's", "/o/back\\slash", "/o/end\\"],
)
def test_run_dir_override_survives_hydra_parsing(path: str) -> None:
    override = OverridesParser.create().parse_override("hydra.run.dir=" + hydra_quote(path))
    assert override.value() == path


def test_outside_any_cluster_this_is_rank_zero_and_nsae_starts_the_ranks(env) -> None:
    assert global_rank() == 0 and not external_ranks()
    check_allocation(OmegaConf.create({"devices": 4}))  # nothing to check against


def test_slurm_tasks_give_the_rank(env) -> None:
    env.setenv("SLURM_NTASKS", "4")
    env.setenv("SLURM_PROCID", "3")
    env.setenv("SLURM_JOB_NAME", "train")
    assert global_rank() == 3 and external_ranks()
    check_allocation(OmegaConf.create({"devices": 2, "num_nodes": 2}))


def test_an_interactive_slurm_shell_is_not_a_slurm_step(env) -> None:
    env.setenv("SLURM_NTASKS", "4")
    env.setenv("SLURM_JOB_NAME", "bash")
    assert not external_ranks()
    check_allocation(OmegaConf.create({"devices": 1}))


def test_devices_that_do_not_match_the_slurm_allocation_are_refused(env) -> None:
    env.setenv("SLURM_NTASKS", "2")
    env.setenv("SLURM_PROCID", "0")
    env.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(NsaeError, match=r"trainer.devices=4 x trainer.num_nodes=1 .* 2 tasks"):
        check_allocation(OmegaConf.create({"devices": 4, "num_nodes": 1}))


@pytest.mark.parametrize(("devices", "n"), [(1, 1), (2, 2), ("3", 3), ([0, 1], 2)])
def test_device_counts(devices, n: int) -> None:
    assert n_devices(OmegaConf.create({"devices": devices})) == n


def test_auto_devices_are_refused_for_ddp() -> None:
    with pytest.raises(NsaeError, match="number of devices or a list"):
        n_devices(OmegaConf.create({"devices": "auto"}))
