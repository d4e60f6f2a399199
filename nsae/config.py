"""What the config names: its resolvers, its groups' options, the layers and shape of the
source model, and the beta exponent a job trains with (read, never built: no model is
loaded here). The checks of a composed job are in `nsae.checks`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nsae.constants import ASSETS, CONF_DIR
from nsae.errors import NsaeError


def asset(name: str) -> str:
    """`${nsae.asset:kjv-gpt2}`: a path inside the package's shipped assets."""
    return str(ASSETS / name)


def mul(a: float, b: float) -> float:
    """`${nsae.mul:a,b}`: a * b (the alpha of an alpha sub-grid point)."""
    return float(a) * float(b)


def times(steps: int, factor: float) -> int:
    """`${nsae.times:steps,factor}`: a step count times a factor, an integer (the doubling
    check's `${nsae.times:${budget.steps},2}`)."""
    return round(float(steps) * float(factor))


def tag(name: str, value: Any) -> str:
    """`${nsae.tag:k,${oc.select:sae.k,null}}`: "_k=16" in a job folder's name, or nothing
    where the value is null (a type without the key)."""
    return "" if value is None else f"_{name}={value}"


def sweep_name() -> str | None:
    """`${nsae.sweep_name:}`: the sweep directory's name in a multirun job, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def job_name(sae_type: str, normalization: str, mode: str, alpha: Any, seed: Any) -> str:
    """`${nsae.job_name:${sae.type},${loss.normalization_method},${coeff.mode},${coeff.alpha},
    ${seed}}`, a sweep job's folder name after its number: the condition and the seed, each
    word once: `relu_input_norm_alpha=0.5_seed=1`, `normalized_sae_none_beta-alpha=0.006_seed=0`
    (sae_type none is the plain ReLU SAE, `relu` here as in `sae_type=relu`)."""
    coeff = f"alpha={alpha}" if mode == "alpha" else f"{mode}-alpha={alpha}"
    sae = "relu" if sae_type == "none" else sae_type
    return f"{sae}_{normalization}_{coeff}_seed={seed}"


for _name, _fn in (
    ("nsae.asset", asset),
    ("nsae.mul", mul),
    ("nsae.times", times),
    ("nsae.tag", tag),
    ("nsae.sweep_name", sweep_name),
    ("nsae.job_name", job_name),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def nearest(word: str, candidates: list[str]) -> str:
    """` (did you mean X?)` for the closest candidate (difflib), or nothing."""
    import difflib

    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


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
                hint = nearest(choice, options)
                raise NsaeError(
                    f"{group}={choice} is not an option{hint}; valid: {', '.join(options)}"
                )


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
