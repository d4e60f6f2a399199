"""SAE variants. Each module in this package defines one variant (a subclass of `SAE`
with a `name`); importing the package registers them all, keyed by `sae_type`."""

from __future__ import annotations

import importlib
import pkgutil

from nsae.saes.base import SAE

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")


def build_sae(sae_type: str, n_layers: int, d_model: int, n_features: int, **kwargs: object) -> SAE:
    """Instantiate the variant registered as `sae_type`."""
    if sae_type not in SAE.registry:
        raise ValueError(f"sae_type={sae_type!r}; valid: {', '.join(sorted(SAE.registry))}")
    return SAE.registry[sae_type](n_layers, d_model, n_features, **kwargs)


__all__ = ["SAE", "build_sae"]
