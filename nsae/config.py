"""Config checks that run before anything heavy: one clear line per bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nsae.errors import NsaeError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
ASSETS = Path(__file__).resolve().parent / "assets"


def asset(name: str) -> str:
    """`${nsae.asset:kjv-gpt2}`: a path inside the package's shipped assets."""
    return str(ASSETS / name)


def mul(a: float, b: float) -> float:
    """`${nsae.mul:a,b}`: a * b (the alpha of an alpha sub-grid point)."""
    return float(a) * float(b)


def sweep_name() -> str | None:
    """`${nsae.sweep_name:}`: the sweep directory's name in a multirun job, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


for _name, _fn in (("nsae.asset", asset), ("nsae.mul", mul), ("nsae.sweep_name", sweep_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(overrides: list[str]) -> None:
    """Reject `group=choice` overrides naming an option that has no YAML file."""
    for arg in overrides:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        hydra_own = group.startswith("hydra/")  # e.g. hydra/launcher: Hydra's plugins add options
        if (
            hydra_own
            or not sep
            or not (CONF_DIR / group).is_dir()
            or any(c in value for c in "()[]{}$")
        ):
            continue
        options = group_options(group)
        for choice in value.split(","):
            if choice not in options and choice != "null":
                raise NsaeError(f"{group}={choice} is not an option; valid: {', '.join(options)}")


def resolve_layers(layers: Any, n_layers: int) -> list[int]:
    """`all`, an int, or a list of ints -> sorted unique layer indices, range-checked."""
    if layers == "all":
        return list(range(n_layers))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    for layer in chosen:
        if not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise NsaeError(
                f"source.layers contains {layer!r}, outside the model; "
                f"valid: 0..{n_layers - 1} or all"
            )
    if not chosen:
        raise NsaeError(f"source.layers is empty; valid: 0..{n_layers - 1} or all")
    return sorted(set(chosen))


def check_nonnegative(name: str, value: Any) -> None:
    if value is not None and float(value) < 0:
        raise NsaeError(f"{name}={value} is negative; valid: >= 0")


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or value <= 0:
        raise NsaeError(f"{name}={value!r}; valid: an integer > 0")


def validate(cfg: Any, n_layers: int, max_positions: int | None) -> list[int]:
    """Check the composed config against the source model; return the layers to train."""
    from nsae.data.text import check_data_files

    check_nonnegative("coeff.alpha", cfg.coeff.alpha)
    check_nonnegative("sae.noise_std", cfg.sae.get("noise_std"))
    check_nonnegative("optim.lr", cfg.optim.lr)
    check_positive("sae.expansion_factor", cfg.sae.expansion_factor)
    sizes = [
        "context_size",
        "batch_size",
        "buffer_tokens",
        "harvest_batch",
        "n_eval_tokens",
        "n_norm_tokens",
    ] + (["cache_tokens"] if cfg.data.get("cache") else [])
    for key in sizes:
        check_positive(f"data.{key}", cfg.data[key])
    every, log_every = cfg.metrics.get("train_every_n_steps", 1), cfg.trainer.log_every_n_steps
    check_positive("metrics.train_every_n_steps", every)
    if every > log_every:
        raise NsaeError(
            f"metrics.train_every_n_steps={every} exceeds trainer.log_every_n_steps="
            f"{log_every}, so some logged windows would have no training metrics; "
            f"valid: 1..{log_every}"
        )
    if max_positions is not None and cfg.data.context_size > max_positions:
        raise NsaeError(
            f"data.context_size={cfg.data.context_size} exceeds the model's maximum "
            f"positions; valid: 1..{max_positions}"
        )
    from nsae.data.source import HOOK_SITES

    if cfg.source.hook_site not in HOOK_SITES:
        raise NsaeError(
            f"source.hook_site={cfg.source.hook_site!r}; valid: {', '.join(HOOK_SITES)}"
        )
    check_data_files(cfg.data.get("data_files"))
    return resolve_layers(cfg.source.layers, n_layers)
