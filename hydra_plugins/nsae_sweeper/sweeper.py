"""The `hydra/sweeper=nsae` plugin: Hydra's basic sweeper (the cartesian product of
`hydra.sweeper.params` and the command line's comma lists) with `hydra.sweeper.only`, axes
that apply to some jobs only (`nsae.sweep.restrict_axes`): e.g. the Normalized SAE's noise
swept without training the standard SAE once per noise value it does not have."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class NsaeSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        only: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.only = dict(only or {})

    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> Any:  # type: ignore[override]
        from nsae.sweep import restrict_axes

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        return list(self.split_overrides_to_chunks(restrict_axes(jobs, self.only), max_batch_size))
