"""`sae_type=jumprelu`: the JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping ahead").

Per feature a learned threshold theta_j = exp(log_theta_j) > 0:
    f_j = JumpReLU(z_j; theta_j) = z_j H(z_j - theta_j),   z = W_e (x - b_d) + b_e,
and the sparsity penalty is the per-token L0, sum_j H(z_j - theta_j). H has no useful
gradient, so both use straight-through estimators with the rectangle kernel
K(u) = 1[-1/2 < u < 1/2] and bandwidth eps (`sae.bandwidth`):
    JumpReLU:  d/dz = H(z - theta),   d/dtheta = -(theta / eps) K((z - theta) / eps)
    H (L0):    d/dz = 0,              d/dtheta = -(1 / eps) K((z - theta) / eps)
(gradients reach log_theta through theta = exp(log_theta)). Decoder rows have unit norm.

feature_scaling: proportional (f scales with the input, theta with it). The L0 penalty
does not scale at all, so `sparsity_scaling` is "bounded" and the beta exponent is
k = 2 - p. normalization_method: all. coeff: alpha and beta (the L0 coefficient).
The penalty's value does not depend on eps; its gradients are exactly scale-covariant
only if eps is scaled with the input too.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from nsae.saes.base import SAE, Scaling, TrainOutput


def rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to the (trailing) shape of the parameter."""
    return g.reshape(-1, *shape).sum(0)


class JumpReLUFn(torch.autograd.Function):
    """z H(z - theta), with the pseudo-derivative in theta (module docstring)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        d_theta = -(theta / ctx.eps) * rectangle((z - theta) / ctx.eps) * grad
        return (z > theta).to(grad.dtype) * grad, _reduce_to(d_theta, theta.shape), None


class StepFn(torch.autograd.Function):
    """H(z - theta), with the pseudo-derivative in theta only (module docstring)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        d_theta = -(1.0 / ctx.eps) * rectangle((z - theta) / ctx.eps) * grad
        return None, _reduce_to(d_theta, theta.shape), None


class JumpReLUSAE(SAE, name="jumprelu"):
    unit_norm_decoder = True

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_features: int,
        bandwidth: float = 0.05,
        init_threshold: float = 0.5,
    ) -> None:
        super().__init__(n_layers, d_model, n_features)
        for key, value in (("bandwidth", bandwidth), ("init_threshold", init_threshold)):
            if not value > 0:
                raise ValueError(f"sae.{key}={value}; valid: > 0")
        self.bandwidth, self.init_threshold = bandwidth, init_threshold
        log_theta = torch.full((n_layers, n_features), math.log(init_threshold))
        self.log_threshold_LM = nn.Parameter(log_theta)

    @classmethod
    def sparsity_scaling_for(cls, l1_weighting: str | None = None) -> Scaling:
        return "bounded"  # an L0 count: the same whatever the input's scale

    def activation(self, pre_BLM: Tensor) -> Tensor:
        return JumpReLUFn.apply(pre_BLM, self.log_threshold_LM.exp(), self.bandwidth)

    def train_forward(self, x_BLD: Tensor) -> TrainOutput:
        pre_BLM = self.pre_activation(x_BLD)
        theta_LM = self.log_threshold_LM.exp()
        f_BLM = JumpReLUFn.apply(pre_BLM, theta_LM, self.bandwidth)
        l0_BL = StepFn.apply(pre_BLM, theta_LM, self.bandwidth).sum(-1)
        return TrainOutput(self.decode(f_BLM), f_BLM, self.fired(pre_BLM, f_BLM), l0_BL)

    @torch.no_grad()
    def rescale_layer_(self, i: int, s: float) -> None:
        super().rescale_layer_(i, s)
        self.log_threshold_LM[i].add_(math.log(s))

    def hparams(self) -> dict[str, object]:
        return {"bandwidth": self.bandwidth, "init_threshold": self.init_threshold}

    def export_arch(self) -> dict[str, object]:
        return {"architecture": "jumprelu"}

    def layer_state(self, i: int) -> dict[str, Tensor]:
        return super().layer_state(i) | {"threshold": self.log_threshold_LM[i].detach().exp()}

    @torch.no_grad()
    def load_layer_state(self, i: int, state: dict[str, Tensor]) -> None:
        super().load_layer_state(i, state)
        self.log_threshold_LM[i].copy_(state["threshold"].log())
