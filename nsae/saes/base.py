"""The SAE bank base class: one independent SAE per layer, all layers batched.

Shapes: B tokens, L layers, D model width, M features. Parameters are stored per layer as
2-D matrices stacked along a leading layer axis and applied with one batched matmul:

    W_enc_LDM, b_enc_LM, W_dec_LMD, b_dec_LD

A variant subclasses `SAE` with a `name` (its `sae_type`) and implements `activation`;
it may override the optimizer-step hooks (e.g. to constrain the decoder) and `export_arch`.

Training goes through `train_forward`, which returns a `TrainOutput`: the reconstruction,
the features the loss sees (with training noise where a variant has it), which features
fired without noise (for dead-feature tracking), and optionally the variant's own per-token
sparsity penalty and per-layer auxiliary loss. Evaluation uses `forward` in eval mode.

`feature_scaling` says how a variant's features respond when its input is scaled by s
(with the matching parameters scaled too): "proportional" features scale by s (ReLU,
TopK, ...), "bounded" ones do not (the Normalized SAE's tanh). It sets the default beta
exponent (see `nsae.loss.beta_exponent`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclass
class TrainOutput:
    """What one training forward gives the loss and the training metrics."""

    x_hat_BLD: Tensor
    f_BLM: Tensor  # the features the loss sees (training noise included, if any)
    fired_LM: Tensor  # bool: fired on some token of the batch, without training noise
    sparsity_BL: Tensor | None = None  # the variant's own per-token penalty; None: sum_j |f_j|
    aux_L: Tensor | None = None  # a per-layer auxiliary loss added to the total; None: none


class SAE(nn.Module):
    """Base class of every SAE variant. Subclasses register themselves by `name`."""

    registry: ClassVar[dict[str, type[SAE]]] = {}
    name: ClassVar[str]
    feature_scaling: ClassVar[Literal["proportional", "bounded"]] = "proportional"

    def __init_subclass__(cls, name: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            SAE.registry[name] = cls

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__()
        self.n_layers, self.d_model, self.n_features = n_layers, d_model, n_features
        L, D, M = n_layers, d_model, n_features
        self.W_enc_LDM = nn.Parameter(torch.empty(L, D, M))
        self.b_enc_LM = nn.Parameter(torch.zeros(L, M))
        self.W_dec_LMD = nn.Parameter(torch.empty(L, M, D))
        self.b_dec_LD = nn.Parameter(torch.zeros(L, D))
        self.reset_parameters()

    # -- initialisation ----------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Kaiming-uniform per layer: the fan-in is that of one layer's 2-D matrix."""
        for W_LDM in (self.W_enc_LDM, self.W_dec_LMD):
            fan_in = W_LDM.shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(W_LDM, -bound, bound)

    @torch.no_grad()
    def init_b_dec(self, x_NLD: Tensor, method: str = "mean") -> None:
        """Start b_dec at the mean or geometric median of a sample of each layer's inputs."""
        if method == "mean":
            self.b_dec_LD.copy_(x_NLD.mean(0))
        elif method == "geometric_median":
            self.b_dec_LD.copy_(geometric_median(x_NLD))
        else:
            raise ValueError(f"init_b_dec={method!r}; valid: mean, geometric_median")

    # -- forward -------------------------------------------------------------------------
    def pre_activation(self, x_BLD: Tensor) -> Tensor:
        """W_e (x - b_d) + b_e for every layer, as [B, L, M]."""
        x_LBD = (x_BLD - self.b_dec_LD).transpose(0, 1)
        pre_LBM = torch.baddbmm(self.b_enc_LM.unsqueeze(1), x_LBD, self.W_enc_LDM)
        return pre_LBM.transpose(0, 1)

    def activation(self, pre_BLM: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x_BLD: Tensor) -> Tensor:
        return self.activation(self.pre_activation(x_BLD))

    def decode(self, f_BLM: Tensor) -> Tensor:
        x_hat_LBD = torch.baddbmm(self.b_dec_LD.unsqueeze(1), f_BLM.transpose(0, 1), self.W_dec_LMD)
        return x_hat_LBD.transpose(0, 1)

    def forward(self, x_BLD: Tensor) -> tuple[Tensor, Tensor]:
        """Return (x_hat_BLD, f_BLM)."""
        f_BLM = self.encode(x_BLD)
        return self.decode(f_BLM), f_BLM

    def train_forward(self, x_BLD: Tensor) -> TrainOutput:
        """The training forward (call in train mode)."""
        pre_BLM = self.pre_activation(x_BLD)
        f_BLM = self.activation(pre_BLM)
        return TrainOutput(self.decode(f_BLM), f_BLM, self.fired(pre_BLM, f_BLM))

    def fired(self, pre_BLM: Tensor, f_BLM: Tensor) -> Tensor:
        """[L, M] bool: which features fired on some token, as they would without noise."""
        return f_BLM.detach().amax(0) > 0

    # -- optimizer-step hooks (no-ops unless a variant constrains its weights) ---------
    def before_optimizer_step(self) -> None:
        """Called after backward, before the optimizer updates the weights."""

    def after_optimizer_step(self) -> None:
        """Called right after the optimizer updated the weights."""

    # -- export --------------------------------------------------------------------------
    def hparams(self) -> dict[str, object]:
        """The variant's own constructor arguments (beyond layers, width and features)."""
        return {}

    def export_arch(self) -> dict[str, object]:
        """Architecture fields of the exported cfg.json (SAELens layout)."""
        return {"architecture": self.name}

    def layer_state(self, i: int) -> dict[str, Tensor]:
        """Layer i's weights under SAELens names: W_enc [D, M], b_enc, W_dec [M, D], b_dec."""
        return {
            "W_enc": self.W_enc_LDM[i].detach().clone(),
            "b_enc": self.b_enc_LM[i].detach().clone(),
            "W_dec": self.W_dec_LMD[i].detach().clone(),
            "b_dec": self.b_dec_LD[i].detach().clone(),
        }


@torch.no_grad()
def geometric_median(x_NLD: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm, per layer: argmin_y sum_n ||x_n - y||."""
    y_LD = x_NLD.mean(0)
    for _ in range(iters):
        w_NL = 1.0 / (x_NLD - y_LD).norm(dim=-1).clamp_min(eps)
        y_LD = (w_NL.unsqueeze(-1) * x_NLD).sum(0) / w_NL.sum(0).unsqueeze(-1)
    return y_LD
