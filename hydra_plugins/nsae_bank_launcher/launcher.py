"""The `hydra/launcher=nsae_bank` plugin: Hydra finds it here, in the hydra_plugins
namespace; what it does is `nsae.cohort` (jobs that see the same activation stream train in
one process, from one harvest)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class NsaeBankLauncher(Launcher):
    def __init__(self, memory_gb: float | None = None) -> None:
        """memory_gb: the memory a cohort may use (None: 80% of the device's free memory)."""
        self.memory_gb = memory_gb
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context  # (nsae.train runs each job)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from hydra.core.utils import setup_globals

        from nsae.cohort import launch

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        returns: Any = launch(
            self.hydra_context, self.config, job_overrides, initial_job_idx, self.memory_gb
        )
        return returns
