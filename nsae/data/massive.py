"""Massive fixed directions: a synthetic source's realistic outlier premise.

In real LMs the high-norm tokens are not uniformly rescaled tokens: GPT-2 small's
position-0 (attention-sink) residual carries a handful of massive coordinates, values in
the thousands where typical entries are of order 1. `source.massive` puts that on a
synthetic source (`nsae.data.synthetic`): M fixed coordinate directions e_{d_1..d_M} of
every layer (the same coordinates in every layer; chosen from `model.seed`), added to a
random `token_frac` of the tokens, and to every `every`-th token if set (a fixed
position: token i of each run of `every`, like position 0 of a context), with

    x_t^l += sum_m a^l e_{d_m},    a^l = magnitude * n^l * s_l / sqrt(M)

so that the massive part's norm is `magnitude` times n^l, layer l's median token norm
before the premise (measured once on a fixed calibration sample), times the layer scale
s_l. The M directions are true features of their own (appended to the true dictionary,
their activations a^l on the tokens that carry them, 0 elsewhere), so x is still exactly
the true features' sum plus the bias. With `n_directions: 0` (the default) nothing changes
and no random number is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nsae.errors import NsaeError


@dataclass(frozen=True)
class Massive:
    n_directions: int = 0
    magnitude: float = 50.0
    token_frac: float = 0.01
    every: int | None = None  # also every `every`-th token (a fixed position), if set

    def __post_init__(self) -> None:
        bad = (
            isinstance(self.n_directions, bool)
            or not isinstance(self.n_directions, int)
            or self.n_directions < 0
            or self.magnitude <= 0
            or not 0 <= self.token_frac <= 1
            or (self.every is not None and (not isinstance(self.every, int) or self.every < 1))
        )
        if bad:
            raise NsaeError(
                f"source.massive: n_directions={self.n_directions}, magnitude={self.magnitude}, "
                f"token_frac={self.token_frac}, every={self.every}; valid: n_directions an "
                "integer >= 0, magnitude > 0, 0 <= token_frac <= 1, every null or an integer >= 1"
            )

    @property
    def on(self) -> bool:
        return self.n_directions > 0

    def dims(self, d_model: int, seed: int) -> Tensor:
        """The M coordinates, fixed by the models' seed."""
        if self.n_directions > d_model:
            raise NsaeError(
                f"source.massive.n_directions={self.n_directions} exceeds d_model={d_model}; "
                f"valid: 0..{d_model}"
            )
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(d_model, generator=gen)[: self.n_directions].sort().values

    def directions(self, d_model: int, seed: int, n_layers: int) -> Tensor:
        """[L, M, D]: the unit directions, as rows to append to each layer's dictionary."""
        eye = torch.eye(d_model)[self.dims(d_model, seed)]
        return eye.expand(n_layers, -1, -1).clone()

    def carriers(self, n_tokens: int, device: torch.device) -> Tensor:
        """[N] bool: which tokens carry the directions (from the global generator)."""
        mask_N = torch.rand(n_tokens, device=device) < self.token_frac
        if self.every is not None:
            mask_N[:: self.every] = True
        return mask_N

    def activations(self, mask_N: Tensor, amplitude_L: Tensor) -> Tensor:
        """[N, L, M]: each carrier's activation of each direction (amplitude_L = magnitude x
        n^l x s_l), 0 on the other tokens."""
        per_direction_L = amplitude_L / self.n_directions**0.5
        f_NL = mask_N[:, None].float() * per_direction_L[None]
        return f_NL[..., None].expand(-1, -1, self.n_directions)
