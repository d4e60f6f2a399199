"""The SAE bank base class: one independent SAE per layer, all layers batched.

Shapes: B tokens, L layers, D model width, M features. Parameters are stored per layer as
2-D matrices stacked along a leading layer axis and applied with one batched matmul:

    W_enc_LDM, b_enc_LM, W_dec_LMD, b_dec_LD

A variant subclasses `SAE` with a `name` (its `sae_type`) and implements `activation`;
it may override the optimizer-step hooks (e.g. to constrain the decoder) and `export_arch`.

Training goes through `train_forward`, which returns a `TrainOutput`: the reconstruction,
the features the loss sees (with training noise where a variant has it), which features
fired without noise (for dead-feature tracking), and optionally the variant's own per-token
sparsity penalty, extra per-token squared errors (normalised by ||x||^p like the
reconstruction: AuxK, the gated auxiliary path, Matryoshka prefixes) and a per-layer
auxiliary loss. Evaluation uses `forward` in eval mode.

`feature_scaling` says how a variant's features respond when its input is scaled by s
(with the matching parameters scaled too, see `rescale_layer_`): "proportional" features
scale by s (ReLU, TopK, ...), "bounded" ones do not (the Normalized SAE's tanh).
`sparsity_scaling` says the same of the sparsity penalty (sum |f| follows the features; an
L0 count or a decoder-norm weighted penalty need not); it sets the default beta exponent
(see `nsae.loss.beta_exponent`).

Which config options apply: `uses_sparsity_coeff` (False: the variant has no sparsity
coefficient, so `coeff.alpha` is unused and `coeff=beta` is refused, see
`nsae.saes.check_combination`) and `normalization_methods` (every variant takes all three:
the reconstruction normalisation ||x||^p is meaningful for any of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

Scaling = Literal["proportional", "bounded"]
NORMALIZATION_METHODS = ("none", "input_norm", "input_norm_squared")
L1_WEIGHTINGS = ("none", "decoder_norm")


@dataclass
class TrainOutput:
    """What one training forward gives the loss and the training metrics."""

    x_hat_BLD: Tensor
    f_BLM: Tensor  # the features the loss sees (training noise included, if any)
    fired_LM: Tensor  # bool: fired on some token of the batch, without training noise
    sparsity_BL: Tensor | None = None  # the variant's own per-token penalty; None: sum_j |f_j|
    aux_L: Tensor | None = None  # a per-layer auxiliary loss added to the total; None: none
    # Extra per-token squared errors (coefficients included), divided by ||x||^p like the
    # reconstruction and averaged over tokens; None: none.
    aux_sq_err_BL: Tensor | None = None


class SAE(nn.Module):
    """Base class of every SAE variant. Subclasses register themselves by `name`."""

    registry: ClassVar[dict[str, type[SAE]]] = {}
    name: ClassVar[str]
    feature_scaling: ClassVar[Scaling] = "proportional"
    uses_sparsity_coeff: ClassVar[bool] = True
    normalization_methods: ClassVar[tuple[str, ...]] = NORMALIZATION_METHODS
    unit_norm_decoder: bool = False  # True: decoder rows kept at unit norm (hooks below)
    l1_weighting: str = "none"  # L1 variants: "decoder_norm" weights |f_j| by ||W_dec_j||

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

    def set_l1_weighting(self, l1_weighting: str) -> None:
        """For L1-penalised variants: "none" (sum_j |f_j|) or "decoder_norm"
        (sum_j |f_j| ||W_dec_j||, which also frees the decoder from the unit-norm constraint)."""
        if l1_weighting not in L1_WEIGHTINGS:
            raise ValueError(
                f"sae.l1_weighting={l1_weighting!r}; valid: {', '.join(L1_WEIGHTINGS)}"
            )
        self.l1_weighting = l1_weighting
        if l1_weighting == "decoder_norm":
            self.unit_norm_decoder = False

    @classmethod
    def sparsity_scaling_for(cls, l1_weighting: str | None = None) -> Scaling:
        """How the variant's sparsity penalty scales with the input, for a given
        `sae.l1_weighting` (None: the class default), without building it. Decoder-norm
        weighting: |f_j| ||W_dec_j|| is the norm of feature j's contribution to x_hat, so
        it scales by s whatever the features do."""
        weighting = cls.l1_weighting if l1_weighting is None else l1_weighting
        return "proportional" if weighting == "decoder_norm" else cls.feature_scaling

    @property
    def sparsity_scaling(self) -> Scaling:
        """This instance's `sparsity_scaling_for` (what the beta exponent depends on)."""
        return self.sparsity_scaling_for(self.l1_weighting)

    # -- initialisation ----------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Kaiming-uniform per layer: the fan-in is that of one layer's 2-D matrix."""
        for W_LDM in (self.W_enc_LDM, self.W_dec_LMD):
            fan_in = W_LDM.shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(W_LDM, -bound, bound)
        if type(self).unit_norm_decoder:
            self.after_optimizer_step()

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
        fired_LM = self.fired(pre_BLM, f_BLM)
        return TrainOutput(self.decode(f_BLM), f_BLM, fired_LM, self.l1_penalty(f_BLM))

    def l1_penalty(self, f_BLM: Tensor) -> Tensor | None:
        """sum_j |f_j| ||W_dec_j|| under decoder-norm weighting; None (the loss's plain
        sum_j |f_j|) otherwise."""
        if self.l1_weighting != "decoder_norm":
            return None
        return (f_BLM.abs() * self.W_dec_LMD.norm(dim=-1)).sum(-1)

    def fired(self, pre_BLM: Tensor, f_BLM: Tensor) -> Tensor:
        """[L, M] bool: which features fired on some token, as they would without noise."""
        return f_BLM.detach().amax(0) > 0

    # -- optimizer-step hooks: the unit-norm decoder constraint where a variant has it -----
    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Called after backward, before the optimizer updates the weights: remove each
        decoder row's gradient component parallel to the row (unit-norm decoders)."""
        W, g = self.W_dec_LMD, self.W_dec_LMD.grad
        if self.unit_norm_decoder and g is not None:
            unit = W / W.norm(dim=-1, keepdim=True)
            g.sub_((g * unit).sum(-1, keepdim=True) * unit)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Called right after the optimizer updated the weights: renormalise decoder rows."""
        if self.unit_norm_decoder:
            self.W_dec_LMD.div_(self.W_dec_LMD.norm(dim=-1, keepdim=True))

    # -- scale covariance --------------------------------------------------------------
    @torch.no_grad()
    def rescale_layer_(self, i: int, s: float) -> None:
        """Change layer i's parameters so that on inputs s x it computes what it computed on
        x, in the new units: x_hat -> s x_hat, and f -> s f (proportional) or f (bounded).
        Proportional: pre = W_e (x - b_d) + b_e must scale by s, so b_d, b_e -> s b_d, s b_e
        with the weights unchanged (decoder norms, and so unit-norm constraints, kept)."""
        self.b_dec_LD[i].mul_(s)
        self.b_enc_LM[i].mul_(s)

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
    def load_layer_state(self, i: int, state: dict[str, Tensor]) -> None:
        """The inverse of `layer_state`: set layer i from SAELens-named weights."""
        self.W_enc_LDM[i].copy_(state["W_enc"])
        self.b_enc_LM[i].copy_(state["b_enc"])
        self.W_dec_LMD[i].copy_(state["W_dec"])
        self.b_dec_LD[i].copy_(state["b_dec"])


@torch.no_grad()
def geometric_median(x_NLD: Tensor, iters: int = 50, eps: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm, per layer: argmin_y sum_n ||x_n - y||."""
    y_LD = x_NLD.mean(0)
    for _ in range(iters):
        w_NL = 1.0 / (x_NLD - y_LD).norm(dim=-1).clamp_min(eps)
        y_LD = (w_NL.unsqueeze(-1) * x_NLD).sum(0) / w_NL.sum(0).unsqueeze(-1)
    return y_LD
