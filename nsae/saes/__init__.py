"""SAE variants. Each module in this package but `base` defines one variant (a subclass of
`SAE` with a `name`); importing the package registers them all, keyed by `sae_type`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from nsae.constants import COEFF_MODES, SAE_COMMON_KEYS
from nsae.saes.base import SAE, TrainOutput

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")


# Other names of a type, each a conf/sae_type/<alias>.yaml that composes the type's config
ALIASES = {"relu": "none"}  # the standard (ReLU) SAE; `none` is the write-up's name


def sae_class(sae_type: str) -> type[SAE]:
    if sae_type not in SAE.registry:
        raise ValueError(f"sae_type={sae_type!r}; valid: {', '.join(sorted(SAE.registry))}")
    return SAE.registry[sae_type]


def build_sae(sae_type: str, n_layers: int, d_model: int, n_features: int, **kwargs: object) -> SAE:
    """Instantiate the variant registered as `sae_type`."""
    return sae_class(sae_type)(n_layers, d_model, n_features, **kwargs)


def check_options(sae_type: str, keys: list[str]) -> None:
    """Refuse an `sae.<key>` that the variant does not take (e.g. `+sae.k=3` on the standard
    SAE), naming the ones it does."""
    params = inspect.signature(sae_class(sae_type).__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in params if n not in ("self", "n_layers", "d_model", "n_features")]
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ValueError(
            f"sae.{unknown[0]} is not an option of sae_type={sae_type}; valid: "
            f"{', '.join(f'sae.{n}' for n in valid) or 'none'} (and every type's "
            f"{', '.join(f'sae.{n}' for n in SAE_COMMON_KEYS if n != 'type')})"
        )


def check_combination(sae_type: str, normalization_method: str, coeff_mode: str) -> None:
    """Refuse a (sae_type, normalization_method, coeff) condition that means nothing, with
    one line saying why: e.g. coeff=beta scales a sparsity coefficient, which topk,
    batchtopk and matryoshka do not have (their sparsity is set by sae.k; coeff=alpha is
    accepted there and its alpha is unused)."""
    cls = sae_class(sae_type)
    if normalization_method not in cls.normalization_methods:
        raise ValueError(
            f"normalization_method={normalization_method!r} does not apply to "
            f"sae_type={sae_type}; valid: {', '.join(cls.normalization_methods)}"
        )
    if coeff_mode not in COEFF_MODES:
        raise ValueError(f"coeff={coeff_mode!r}; valid: {', '.join(COEFF_MODES)}")
    if coeff_mode == "beta" and not cls.uses_sparsity_coeff:
        with_coeff = sorted(n for n, c in SAE.registry.items() if c.uses_sparsity_coeff)
        raise ValueError(
            f"coeff=beta on sae_type={sae_type}: it has no sparsity coefficient to scale "
            f"(its sparsity is set by sae.k); use coeff=alpha (alpha unused), or beta with "
            f"sae_type in {', '.join(with_coeff)}"
        )


__all__ = ["SAE", "TrainOutput", "build_sae", "check_combination", "check_options", "sae_class"]
