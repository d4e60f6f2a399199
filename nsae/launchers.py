"""Which Hydra launcher runs a command's jobs: decided here, once, from its `_target_`.

basic     jobs one after another in this process (Hydra's default)
parallel  hydra/launcher=parallel: jobs in joblib worker processes
cohort    hydra/launcher=nsae_bank: jobs that see one activation stream train together,
          one thread each, in this process (`nsae.cohort`)
slurm     hydra/launcher=slurm (submitit): each job a Slurm job
"""

from __future__ import annotations

from typing import Any, Literal

from omegaconf import OmegaConf

Kind = Literal["basic", "parallel", "cohort", "slurm"]
TARGETS: dict[str, Kind] = {  # a substring of the launcher's _target_ -> its kind
    "NsaeBankLauncher": "cohort",
    "JoblibLauncher": "parallel",
    "SlurmLauncher": "slurm",
}


def kind_of(cfg: Any) -> Kind:
    """The launcher kind of a composed config (with its `hydra` node) or of a `_target_`."""
    target = cfg if isinstance(cfg, str) else OmegaConf.select(cfg, "hydra.launcher._target_")
    return next((k for t, k in TARGETS.items() if t in str(target or "")), "basic")


def jobs_apart(kind: Kind) -> bool:
    """Whether jobs run apart from the command's own thread of control (worker processes or
    threads), so that an interrupted job is reported to the command as `WorkersInterrupted`
    and the command reads how each job ended from its run directory."""
    return kind in ("parallel", "cohort")


def job_problem(kind: Kind, cfg: Any) -> str | None:
    """Why this launcher cannot run a job with the resolved config `cfg` (None if it can)."""
    if kind != "cohort":
        return None
    t = cfg.trainer
    devices, nodes = t.get("devices", 1), t.get("num_nodes", 1)
    if devices not in (1, "1", "auto") or nodes not in (1, None):
        return (
            f"hydra/launcher=nsae_bank: trainer.devices={devices}, trainer.num_nodes={nodes}: "
            "a cohort runs its jobs in one process on one device; valid: trainer=default, or "
            "trainer=ddp with hydra/launcher=basic or slurm"
        )
    if "wandb" in str(OmegaConf.select(cfg, "logger") or ""):
        return (
            "hydra/launcher=nsae_bank: logger with W&B: W&B keeps one run per process and a "
            "cohort trains several jobs in one; valid: logger=csv or logger=none"
        )
    return None


# the launcher options that need an optional extra: option -> (its module, the extra)
EXTRAS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}


def check_launcher_extra(argv: list[str]) -> None:
    """`hydra/launcher=slurm` without hydra-submitit-launcher: one line with the install
    command (Hydra would say that its defaults name no such option)."""
    from nsae.checks import require

    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and value in EXTRAS:
            module, extra = EXTRAS[value]
            require(module, f"hydra/launcher={value}", extra)
