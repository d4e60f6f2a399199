"""nsae: sparse autoencoders on every layer of a language model, and the grids that
compare SAE variants (above all the Normalized SAE)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # keep `import nsae` light: torch loads on first use
    if name == "load":
        from nsae.export import load

        return load
    raise AttributeError(name)
