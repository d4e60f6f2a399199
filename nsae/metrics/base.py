"""The base of every metric: shared per-token quantities (`Batch`), float64 sum states that
keep their per-layer shape (`ShapedMetric`, `LayerMetric`), and ratios of sums.

Every metric keeps float64 sums in its state (shape [L] or [L, ...], never growing with
the number of updates) and divides only in `compute()`, so the result is exactly the
defined quantity over all tokens seen, on one process or synced across many.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric


class Batch:
    """One batch of metric inputs, with the per-token [B, L] quantities computed on demand
    and at most once (per-token sums run in float32; the metrics accumulate in float64)."""

    def __init__(self, x_BLD: Tensor, x_hat_BLD: Tensor, f_BLM: Tensor, **known: Tensor) -> None:
        """`known`: per-token quantities already computed elsewhere (the loss computes
        `sq_err_BL` and `l1_BL`), used instead of computing them again."""
        self.x_BLD, self.x_hat_BLD, self.f_BLM = x_BLD.detach(), x_hat_BLD.detach(), f_BLM.detach()
        for name, value in known.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise ValueError(f"Batch has no per-token quantity {name!r}")
            self.__dict__[name] = value.detach()

    @classmethod
    def of(cls, *args: Tensor | Batch, **known: Tensor) -> Batch:
        """The given `Batch`, or one made from (x_BLD, x_hat_BLD, f_BLM) and `known`."""
        return args[0] if isinstance(args[0], Batch) else cls(*args, **known)  # type: ignore[arg-type]

    @cached_property
    def active_BLM(self) -> Tensor:
        """1.0 where a feature is active (f > 0), else 0.0: float, so that sums over it are
        plain float reductions (several times faster than on a bool tensor on the CPU)."""
        return torch.sign(self.f_BLM).clamp_min_(0)

    @cached_property
    def fired_LM(self) -> Tensor:
        """Whether each feature was active on any token of the batch."""
        return self.f_BLM.amax(0) > 0

    @cached_property
    def l0_BL(self) -> Tensor:
        return self.active_BLM.sum(-1)

    @cached_property
    def l1_BL(self) -> Tensor:
        return self.f_BLM.abs().sum(-1)

    @cached_property
    def sq_err_BL(self) -> Tensor:
        return (self.x_hat_BLD - self.x_BLD).pow(2).sum(-1)

    @cached_property
    def x_norm_BL(self) -> Tensor:
        return self.x_BLD.norm(dim=-1)

    @cached_property
    def x_hat_norm_BL(self) -> Tensor:
        return self.x_hat_BLD.norm(dim=-1)

    @cached_property
    def cos_BL(self) -> Tensor:
        """cos(x_hat, x) (0 where either is 0, as torch.cosine_similarity has it)."""
        return torch.cosine_similarity(self.x_hat_BLD, self.x_BLD, dim=-1)

    @cached_property
    def ones_BL(self) -> Tensor:
        return torch.ones(self.x_BLD.shape[:2], device=self.x_BLD.device)


def _shapes(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.shape
    if isinstance(value, dict):
        return {k: _shapes(v) for k, v in value.items()}
    return None


def _reshaped(value: Any, shape: Any) -> Any:
    if isinstance(value, Tensor) and shape is not None:
        return value.reshape(shape)
    if isinstance(value, dict) and isinstance(shape, dict):
        return {k: _reshaped(v, shape.get(k)) for k, v in value.items()}
    return value


class ShapedMetric(Metric):
    """A Metric whose compute() results keep their shape: torchmetrics squeezes any
    one-element result to 0-d (an [L] value with L = 1, an [L, M] density with L = M = 1),
    which this undoes, for a tensor or a dict of tensors."""

    full_state_update = False

    def _wrap_compute(self, compute: Callable) -> Callable:
        shapes: dict[str, Any] = {}

        def recording(*args: Any, **kwargs: Any) -> Any:
            value = compute(*args, **kwargs)
            shapes["value"] = _shapes(value)
            return value

        wrapped = super()._wrap_compute(recording)

        @functools.wraps(compute)
        def reshaped(*args: Any, **kwargs: Any) -> Any:
            value = wrapped(*args, **kwargs)  # from the cache, or recorded just now
            return _reshaped(value, shapes.get("value"))

        return reshaped

    def add_sum_state(self, name: str, shape: tuple[int, ...]) -> None:
        """A float64 state of zeros, summed across ranks."""
        self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")


class LayerMetric(ShapedMetric):
    """Base: per-layer float64 sum states, added to by each batch, summed across ranks."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]]  # state name -> dims among L, D, M

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__()
        size = {"L": n_layers, "D": d_model, "M": n_features}
        for name, dims in self.state_shapes.items():
            self.add_sum_state(name, tuple(size[d] for d in dims))

    def update(self, *args: Tensor | Batch) -> None:
        """From one shared `Batch`, or from the tensors (x_BLD, x_hat_BLD, f_BLM)."""
        self.accumulate(Batch.of(*args))

    def accumulate(self, b: Batch) -> None:
        for name, value in self.batch_sums(b).items():
            setattr(self, name, getattr(self, name) + value.double())

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        raise NotImplementedError


class RatioOfSums(LayerMetric):
    """sum_tokens numerator / sum_tokens denominator (denominator 1 per token: a token mean)."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {"num": ("L",), "den": ("L",)}

    def numerator(self, b: Batch) -> Tensor:
        raise NotImplementedError

    def denominator(self, b: Batch) -> Tensor:
        return b.ones_BL

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        return {
            "num": self.numerator(b).double().sum(0),
            "den": self.denominator(b).double().sum(0),
        }

    def compute(self) -> Tensor:
        return self.num / self.den
