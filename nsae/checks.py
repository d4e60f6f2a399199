"""Config checks that run before anything heavy: one clear line per bad input.

`validate(cfg)` checks one composed job (every key a job reads, the source model's shape,
the memory it needs) and returns its layers; `nsae.preflight` runs it for every job of a
command before anything is written."""

from __future__ import annotations

import os
import sys
from typing import Any

from omegaconf import OmegaConf

from nsae.config import resolve_layers, source_shape
from nsae.constants import SAE_COMMON_KEYS
from nsae.errors import NsaeError
from nsae.memory import check_memory


def number(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """`value` as a float >= minimum (> minimum if strict), or one clear line."""
    bound = f"{'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NsaeError(f"{name}={value!r} is not a number; valid: a number {bound}")
    if value != value or (value <= minimum if strict else value < minimum):
        raise NsaeError(f"{name}={value} is out of range; valid: a number {bound}")
    return float(value)


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise NsaeError(f"{name}={value!r}; valid: an integer > 0")


def validate(cfg: Any, shape: tuple[int, int | None, int] | None = None) -> list[int]:
    """Check the composed config (and the source model's shape: `source_shape`, unless
    given); return the layers to train. Runs before anything is written, once per job of a
    sweep."""
    number("coeff.alpha", cfg.coeff.alpha)
    if cfg.sae.get("noise_std") is not None:
        number("sae.noise_std", cfg.sae.noise_std)
    number("optim.lr", cfg.optim.lr, strict=True)
    from nsae.schedule import DECAYS

    if cfg.optim.get("decay", "none") not in DECAYS:
        raise NsaeError(f"optim.decay={cfg.optim.decay!r}; valid: {', '.join(DECAYS)}")
    ratio = number("optim.min_lr_ratio", cfg.optim.get("min_lr_ratio", 0.0))
    if ratio > 1:
        raise NsaeError(f"optim.min_lr_ratio={ratio} is out of range; valid: 0..1")
    for key, value in (
        ("optim.warmup_steps", cfg.optim.get("warmup_steps", 0)),
        ("coeff.warmup_steps", cfg.coeff.get("warmup_steps", 0)),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise NsaeError(f"{key}={value!r}; valid: an integer >= 0")
    check_positive("sae.expansion_factor", cfg.sae.expansion_factor)
    check_positive("trainer.max_steps", cfg.trainer.max_steps)
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
    if cfg.data.buffer_tokens < 2 * cfg.data.batch_size:
        raise NsaeError(
            f"data.buffer_tokens={cfg.data.buffer_tokens} is less than 2 x data.batch_size="
            f"{cfg.data.batch_size}; valid: buffer_tokens >= {2 * cfg.data.batch_size}"
        )
    every, log_every = cfg.metrics.get("train_every_n_steps", 1), cfg.trainer.log_every_n_steps
    check_positive("metrics.train_every_n_steps", every)
    if every > log_every:
        raise NsaeError(
            f"metrics.train_every_n_steps={every} exceeds trainer.log_every_n_steps="
            f"{log_every}, so some logged windows would have no training metrics; "
            f"valid: 1..{log_every}"
        )
    if cfg.sae.get("init_b_dec", "mean") not in ("mean", "geometric_median"):
        raise NsaeError(f"sae.init_b_dec={cfg.sae.init_b_dec!r}; valid: mean, geometric_median")
    from nsae.data.source import HOOK_SITES

    if cfg.source.get("hook_site", "resid_post") not in HOOK_SITES:
        raise NsaeError(
            f"source.hook_site={cfg.source.hook_site!r}; valid: {', '.join(HOOK_SITES)}"
        )
    check_accelerator(cfg.trainer)
    from nsae.saes import check_combination, check_options

    every = (cfg.sae.get("resample") or {}).get("every_steps", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise NsaeError(f"sae.resample.every_steps={every!r}; valid: an integer >= 0")
    if every and cfg.sae.type not in RESAMPLED:
        raise NsaeError(
            f"sae.resample.every_steps={every} on sae_type={cfg.sae.type}: resampling is "
            f"implemented for {', '.join(RESAMPLED)} (the TopK family has AuxK); valid: 0"
        )
    if every:
        number("sae.resample.encoder_scale", cfg.sae.resample.get("encoder_scale", 0.2), 0, True)
    check_misc(cfg)

    try:
        check_combination(cfg.sae.type, cfg.loss.normalization_method, cfg.coeff.mode)
        check_options(cfg.sae.type, [k for k in cfg.sae if k not in SAE_COMMON_KEYS])
    except ValueError as err:
        raise NsaeError(str(err)) from None
    n_layers, max_positions, d_model = shape or source_shape(cfg.source)
    layers = resolve_layers(cfg.source.layers, n_layers)
    check_memory(cfg, len(layers), d_model)
    if max_positions is not None and cfg.data.context_size > max_positions:
        raise NsaeError(
            f"data.context_size={cfg.data.context_size} exceeds the model's maximum "
            f"positions; valid: 1..{max_positions}"
        )
    if cfg.source.get("kind", "lm") == "synthetic":
        require("sae_lens", "source.kind=synthetic", "saelens")
    else:
        from nsae.data.text import check_data_files

        check_data_files(cfg.data.get("data_files"), str(cfg.data.path))
    return layers


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
RESAMPLED = ("none", "normalized_sae")  # the L1-penalised SAEs nsae/resample.py knows


def check_misc(cfg: Any) -> None:
    """The remaining keys a job reads: metric names, dtypes, intervals, seeds, flags."""
    from nsae.metrics import METRICS

    for group in ("train", "eval"):
        names = list(cfg.metrics.get(group) or [])
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise NsaeError(
                f"metrics.{group} has unknown metrics {unknown}; valid: {', '.join(METRICS)}"
            )
    from nsae.data.norms import NORMALIZE_ACTIVATIONS

    method = cfg.data.get("normalize_activations", "none")
    if method not in NORMALIZE_ACTIVATIONS:
        raise NsaeError(
            f"data.normalize_activations={method!r}; valid: {', '.join(NORMALIZE_ACTIVATIONS)}"
        )
    if cfg.data.get("cache_dtype", "float16") not in ("float16", "float32"):
        raise NsaeError(f"data.cache_dtype={cfg.data.cache_dtype!r}; valid: float16, float32")
    for key in (
        "trainer.val_check_interval",
        "trainer.log_every_n_steps",
        "metrics.dead_window_tokens",
    ):
        check_positive(key, OmegaConf.select(cfg, key))
    workers = cfg.data.get("num_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise NsaeError(f"data.num_workers={workers!r}; valid: an integer >= 0")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int):
        raise NsaeError(f"seed={cfg.get('seed')!r}; valid: an integer")
    for key in ("data.streaming", "data.cache", "resume", "metrics.splice"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise NsaeError(f"{key}={value!r}; valid: true, false")
    betas = list(cfg.optim.get("betas", [0.9, 0.999]))
    if len(betas) != 2 or not all(
        isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
    ):
        raise NsaeError(f"optim.betas={betas}; valid: two numbers in [0, 1)")
    every_s = OmegaConf.select(cfg, "console.progress_every_s")
    if every_s is not None:
        number("console.progress_every_s", every_s, strict=True)
    k = cfg.coeff.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | float)):
        raise NsaeError(f"coeff.k={k!r} is not a number; valid: a number, or null (the default)")


WARNED: set[str] = set()


def warn_once(line: str) -> None:
    """Print a warning once per process, from the command's process or rank 0 only."""
    from nsae.ranks import global_rank

    if line in WARNED or global_rank() != 0:
        return
    WARNED.add(line)
    print(line, file=sys.stderr, flush=True)


def installed(module: str) -> bool:
    """Can `module` be imported here (without importing it)?"""
    import importlib.util

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str, extra: str) -> None:
    """One line naming the optional extra that `what` needs, with its install command."""
    if not installed(module):
        raise NsaeError(
            f"{what} needs nsae's {extra} extra ({module} is not installed): "
            f'pip install -e ".[{extra}]"'
        )


def check_accelerator(trainer: Any) -> None:
    """The accelerator and device count must exist here (Lightning's own error, in one line)."""
    import torch

    acc = str(trainer.get("accelerator", "auto"))
    if acc not in ACCELERATORS:
        raise NsaeError(f"trainer.accelerator={acc}; valid: {', '.join(ACCELERATORS)}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if acc in ("gpu", "cuda") and gpus == 0:
        raise NsaeError(f"trainer.accelerator={acc} but this machine has no GPU; valid: auto, cpu")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise NsaeError("trainer.accelerator=mps but MPS is not available; valid: auto, cpu")
    devices = trainer.get("devices", 1)
    cores = os.cpu_count() or 1
    on_cpu = acc == "cpu" or (acc == "auto" and not gpus)
    if on_cpu and isinstance(devices, int) and devices > cores:
        warn_once(
            f"nsae: warning: trainer.devices={devices} CPU processes on {cores} CPU cores: the "
            f"ranks share the cores, each training on its own batch (the global batch is "
            f"{devices} x data.batch_size)"
        )
    if gpus and acc in ("auto", "gpu", "cuda") and isinstance(devices, int) and devices > gpus:
        raise NsaeError(
            f"trainer.devices={devices} but this machine has {gpus} GPU(s); valid: 1..{gpus}"
        )
