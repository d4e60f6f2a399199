"""Config checks that run before anything heavy: one clear line per bad input."""

from __future__ import annotations

import os
from functools import lru_cache
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
    """`all`, an int, or a list of ints -> sorted unique layer indices, range-checked. A
    repeated layer is trained once (with a one-line note)."""
    valid = f"valid: integers in 0..{n_layers - 1}, a list of them, or all"
    if layers == "all":
        return list(range(n_layers))
    if isinstance(layers, str) or layers is None:
        raise NsaeError(f"source.layers={layers!r} is not a layer index; {valid}")
    chosen = [layers] if isinstance(layers, int) else list(layers)
    for layer in chosen:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise NsaeError(f"source.layers contains {layer!r}, outside the model; {valid}")
    if not chosen:
        raise NsaeError(f"source.layers is empty; {valid}")
    unique = sorted(set(chosen))
    if len(unique) < len(chosen):
        print(f"nsae: note: source.layers={chosen} repeats a layer; training layers {unique}")
    return unique


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


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def looks_local(name: str) -> bool:
    """A model name meant as a local path (hub names are `org/name` or `name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


@lru_cache(maxsize=8)
def model_shape(name: str) -> tuple[int, int | None, int]:
    """(number of layers, maximum positions, width) of a source model, from its config.
    A local model directory must exist, hold weights, and be a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = Path(name).expanduser()
    if looks_local(name):
        if not path.is_dir():
            raise NsaeError(
                f"source.name={name}: no such model directory; valid: a local "
                "Hugging Face model directory or a hub model name"
            )
        if not (path / "config.json").is_file():
            raise NsaeError(f"source.name={name}: no config.json in the model directory")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise NsaeError(
                f"source.name={name}: no weights in the model directory; valid: "
                f"one of {', '.join(WEIGHT_FILES)}"
            )
    try:
        model_cfg = AutoConfig.from_pretrained(str(path) if looks_local(name) else name)
    except (OSError, ValueError) as err:
        raise NsaeError(f"cannot load source model {name!r}: {str(err).splitlines()[0]}") from None
    if model_cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise NsaeError(
            f"source.name={name} is a {model_cfg.model_type!r} model, not a causal LM; "
            "valid: a model that AutoModelForCausalLM loads (GPT-2, GPT-NeoX, Llama, ...)"
        )
    n_layers = getattr(model_cfg, "num_hidden_layers", None)
    if n_layers is None:
        raise NsaeError(f"source model {name!r} has no num_hidden_layers; valid: a causal LM")
    return n_layers, getattr(model_cfg, "max_position_embeddings", None), model_cfg.hidden_size


def source_shape(source: Any) -> tuple[int, int | None, int]:
    """(layers, maximum positions, width) of the configured source (`init: random`: of the
    model its `config` describes; nothing is built or downloaded)."""
    if source.get("kind", "lm") == "synthetic":
        return int(source.n_layers), None, int(source.d_model)
    from nsae.data.source import INITS, model_config

    init = source.get("init", "pretrained")
    if init not in INITS:
        raise NsaeError(f"source.init={init!r}; valid: {', '.join(INITS)}")
    if init == "random":
        model_cfg = model_config(source.get("config"))
        positions = getattr(model_cfg, "max_position_embeddings", None)
        return model_cfg.num_hidden_layers, positions, model_cfg.hidden_size
    return model_shape(str(source.name))


def validate(cfg: Any) -> list[int]:
    """Check the composed config (and the source model's shape); return the layers to
    train. Runs before anything is written, once per job of a sweep."""
    from nsae.data.text import check_data_files

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
    from nsae.saes import check_combination

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
    except ValueError as err:
        raise NsaeError(str(err)) from None
    n_layers, max_positions, d_model = source_shape(cfg.source)
    layers = resolve_layers(cfg.source.layers, n_layers)
    check_memory(cfg, len(layers), d_model)
    if max_positions is not None and cfg.data.context_size > max_positions:
        raise NsaeError(
            f"data.context_size={cfg.data.context_size} exceeds the model's maximum "
            f"positions; valid: 1..{max_positions}"
        )
    if cfg.source.get("kind", "lm") != "synthetic":
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
    k = cfg.coeff.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | float)):
        raise NsaeError(f"coeff.k={k!r} is not a number; valid: a number, or null (the default)")


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
    if gpus and acc in ("auto", "gpu", "cuda") and isinstance(devices, int) and devices > gpus:
        raise NsaeError(
            f"trainer.devices={devices} but this machine has {gpus} GPU(s); valid: 1..{gpus}"
        )


def available_memory(accelerator: str) -> tuple[int, str]:
    """(bytes available, what) on the device training will use."""
    import torch

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "free GPU memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "available RAM"


def memory_parts(cfg: Any, n_layers: int, d_model: int) -> tuple[int, int]:
    """Bytes of a job's training: (the SAE bank's weights, gradients and Adam state (4
    copies) and one step's activations; the shuffle buffer), in float32."""
    M = d_model * int(cfg.sae.expansion_factor)
    params = n_layers * (2 * d_model * M + M + d_model)
    step = cfg.data.batch_size * n_layers * (3 * M + 4 * d_model)
    return 4 * (4 * params + step), 4 * cfg.data.buffer_tokens * n_layers * d_model


def check_memory(cfg: Any, n_layers: int, d_model: int) -> None:
    """The SAE bank's weights, gradients and Adam state, the shuffle buffer and one step's
    activations (`memory_parts`) must fit the training device."""
    need = sum(memory_parts(cfg, n_layers, d_model))
    have, what = available_memory(str(cfg.trainer.get("accelerator", "auto")))
    if what == "available RAM" and str(cfg.trainer.get("strategy", "")).startswith("ddp"):
        need *= max(int(cfg.trainer.get("devices", 1)), 1)  # one bank per CPU process
    if need > have:
        raise NsaeError(
            f"the SAE bank needs about {need / 2**30:.2f} GiB (weights, gradients, Adam "
            f"state, the shuffle buffer and one step) but the device has {have / 2**30:.2f} "
            f"GiB {what}; valid: fewer source.layers, a smaller sae.expansion_factor, "
            "data.buffer_tokens or data.batch_size"
        )


def beta_exponent_of(cfg: Any) -> float | None:
    """The effective k of coeff=beta (None in alpha mode)."""
    if cfg.coeff.mode != "beta":
        return None
    if cfg.coeff.get("k") is not None:
        return float(cfg.coeff.k)
    from nsae.loss import NORM_POWER, beta_exponent
    from nsae.saes import SAE

    scaling = SAE.registry[cfg.sae.type].sparsity_scaling_for(cfg.sae.get("l1_weighting"))
    return float(beta_exponent(NORM_POWER[cfg.loss.normalization_method], scaling))
