"""SAE metrics as torchmetrics `Metric`s, one value per layer.

Every metric keeps float64 sums in its state (shape [L] or [L, ...], never growing with
the number of updates) and divides only in `compute()`, so the result is exactly the
defined quantity over all tokens seen, on one process or synced across many.

All metrics update from `(x_BLD, x_hat_BLD, f_BLM)`. Per-token quantities that several
metrics share (L0, L1, squared error, norms) are computed once per batch by `Batch`.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import ClassVar

import torch
from torch import Tensor, nn
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
        return args[0] if isinstance(args[0], Batch) else cls(*args, **known)

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
    def ones_BL(self) -> Tensor:
        return torch.ones(self.x_BLD.shape[:2], device=self.x_BLD.device)


class LayerMetric(Metric):
    """Base: per-layer float64 sum states, added to by each batch, summed across ranks."""

    full_state_update = False
    state_shapes: ClassVar[dict[str, tuple[str, ...]]]  # state name -> dims among L, D, M

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__()
        size = {"L": n_layers, "D": d_model, "M": n_features}
        for name, dims in self.state_shapes.items():
            shape = tuple(size[d] for d in dims)
            self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

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


class L0(RatioOfSums):
    """Mean over tokens of the number of active features."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l0_BL


class L1(RatioOfSums):
    """Mean over tokens of sum_j f_j."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l1_BL


class L1L0Ratio(RatioOfSums):
    """l1 / l0 = sum f / sum #active: the mean activation of an active feature."""

    def numerator(self, b: Batch) -> Tensor:
        return b.l1_BL

    def denominator(self, b: Batch) -> Tensor:
        return b.l0_BL


class MSE(RatioOfSums):
    """Mean over tokens of ||x_hat - x||^2."""

    def numerator(self, b: Batch) -> Tensor:
        return b.sq_err_BL


class Cosine(RatioOfSums):
    """Mean over tokens of cos(x_hat, x)."""

    def numerator(self, b: Batch) -> Tensor:
        return torch.cosine_similarity(b.x_hat_BLD, b.x_BLD, dim=-1)


class FeatureSuppression(RatioOfSums):
    """sum ||x_hat|| / sum ||x||: 1 is ideal, below 1 is shrinkage."""

    def numerator(self, b: Batch) -> Tensor:
        return b.x_hat_norm_BL

    def denominator(self, b: Batch) -> Tensor:
        return b.x_norm_BL


class RelativeReconstructionBias(RatioOfSums):
    """E||x_hat||^2 / E<x, x_hat>."""

    def numerator(self, b: Batch) -> Tensor:
        return b.x_hat_norm_BL.pow(2)

    def denominator(self, b: Batch) -> Tensor:
        return (b.x_BLD * b.x_hat_BLD).sum(-1)


class FVU(LayerMetric):
    """sum ||x_hat - x||^2 / sum ||x - mean(x)||^2, the mean over all evaluated tokens.

    sum ||x - mu||^2 = sum ||x||^2 - ||sum x||^2 / N, so sums suffice.
    """

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {
        "sse": ("L",),
        "sum_x": ("L", "D"),
        "sum_sq": ("L",),
        "n": ("L",),
    }

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        x = b.x_BLD.double()  # sum_x and sum_sq cancel in the variance: keep them exact
        return {
            "sse": b.sq_err_BL.double().sum(0),
            "sum_x": x.sum(0),
            "sum_sq": x.pow(2).sum((0, 2)),
            "n": b.ones_BL.double().sum(0),
        }

    def compute(self) -> Tensor:
        total_var = self.sum_sq - self.sum_x.pow(2).sum(-1) / self.n
        return self.sse / total_var


class ExplainedVariance(FVU):
    """1 - fvu."""

    def compute(self) -> Tensor:
        return 1 - super().compute()


class NormL0Corr(LayerMetric):
    """Pearson correlation, within a layer, between ||x|| and the token's L0."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {
        k: ("L",) for k in ("n", "a", "b", "aa", "bb", "ab")
    }

    def batch_sums(self, batch: Batch) -> dict[str, Tensor]:
        a, b = batch.x_norm_BL.double(), batch.l0_BL.double()
        return {
            "n": torch.ones_like(a).sum(0),
            "a": a.sum(0),
            "b": b.sum(0),
            "aa": (a * a).sum(0),
            "bb": (b * b).sum(0),
            "ab": (a * b).sum(0),
        }

    def compute(self) -> Tensor:
        cov = self.ab - self.a * self.b / self.n
        var_a = self.aa - self.a.pow(2) / self.n
        var_b = self.bb - self.b.pow(2) / self.n
        return cov / (var_a * var_b).sqrt()


class FeatureDensity(LayerMetric):
    """Per-feature firing counts: the firing frequency of each feature, [L, M]."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {"fired": ("L", "M"), "n": ("L",)}

    def batch_sums(self, b: Batch) -> dict[str, Tensor]:
        return {"fired": b.active_BLM.sum(0), "n": b.ones_BL.double().sum(0)}

    def compute(self) -> Tensor:
        return self.fired / self.n.unsqueeze(-1)


METRICS: dict[str, type[LayerMetric]] = {
    "l0": L0,
    "l1": L1,
    "l1_l0_ratio": L1L0Ratio,
    "mse": MSE,
    "fvu": FVU,
    "explained_variance": ExplainedVariance,
    "cosine": Cosine,
    "feature_suppression": FeatureSuppression,
    "relative_reconstruction_bias": RelativeReconstructionBias,
    "norm_l0_corr": NormL0Corr,
}


class SAEMetrics(nn.Module):
    """A named set of per-layer metrics updated together."""

    def __init__(self, names: list[str], n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__()
        unknown = sorted(set(names) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; valid: {', '.join(METRICS)}")
        self.metrics = nn.ModuleDict({n: METRICS[n](n_layers, d_model, n_features) for n in names})

    def update(self, *args: Tensor | Batch, **known: Tensor) -> Batch:
        """Update every metric from one shared `Batch`, given or made from the tensors
        (x_BLD, x_hat_BLD, f_BLM) and `known` quantities; return it for further metrics."""
        b = Batch.of(*args, **known)
        for metric in self.metrics.values():
            metric.update(b)
        return b

    def compute(self) -> dict[str, Tensor]:
        return {name: metric.compute() for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


def per_layer_dict(
    values: dict[str, Tensor], layers: list[int]
) -> dict[str, dict[str, float | None]]:
    """{metric: {layer_i: v, ..., mean: v}} from {metric: tensor[L]}; a non-finite value
    (e.g. a correlation with a constant) is None, and so is a mean over it."""

    def finite(v: float) -> float | None:
        return v if math.isfinite(v) else None

    out: dict[str, dict[str, float | None]] = {}
    for name, v_L in values.items():
        row = {f"layer_{i}": finite(v) for i, v in zip(layers, v_L.tolist(), strict=True)}
        row["mean"] = finite(float(v_L.double().mean()))
        out[name] = row
    return out


class SpliceMetrics(Metric):
    """Downstream metrics from splicing each layer's reconstruction into the source model.

    Per layer, over all predicted positions: the mean next-token cross-entropy of the clean
    model, with the SAE reconstruction spliced in at that layer only, and with that
    activation zeroed; reconstruction_score = (CE_zero - CE_recon) / (CE_zero - CE_clean);
    kl = mean per-token KL(P_clean || P_recon).
    """

    full_state_update = False
    NAMES = ("ce_clean", "ce_recon", "ce_zero", "kl", "n")

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        for name in self.NAMES:
            self.add_state(name, torch.zeros(n_layers, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        layer_index: int,
        ids_BT: Tensor,
        logits_clean_BTV: Tensor,
        logits_recon_BTV: Tensor,
        logits_zero_BTV: Tensor,
    ) -> None:
        targets = ids_BT[:, 1:].reshape(-1)
        logp = {  # log-probabilities of the positions that predict a next token, [N, V]
            k: torch.log_softmax(v[:, :-1].reshape(-1, v.shape[-1]).float(), dim=-1)
            for k, v in (
                ("clean", logits_clean_BTV),
                ("recon", logits_recon_BTV),
                ("zero", logits_zero_BTV),
            )
        }
        # per-token values in float32, summed over tokens in float64
        sums = {f"ce_{k}": -v.gather(1, targets[:, None]).double().sum() for k, v in logp.items()}
        kl_N = (logp["clean"].exp() * (logp["clean"] - logp["recon"])).sum(-1)
        sums["kl"] = kl_N.double().sum()
        sums["n"] = torch.tensor(float(len(targets)), dtype=torch.float64)
        for name, value in sums.items():
            state = getattr(self, name).clone()
            state[layer_index] += value.to(state.device)
            setattr(self, name, state)

    def compute(self) -> dict[str, Tensor]:
        ce = {k: getattr(self, f"ce_{k}") / self.n for k in ("clean", "recon", "zero")}
        return {
            "reconstruction_score": (ce["zero"] - ce["recon"]) / (ce["zero"] - ce["clean"]),
            "kl": self.kl / self.n,
            "ce_clean": ce["clean"],
            "ce_recon": ce["recon"],
            "ce_zero": ce["zero"],
        }


class RecentFiring(LayerMetric):
    """The last training step at which each feature fired (max over ranks), for dead_fraction
    over a window of recent steps; constant size however long training runs."""

    state_shapes: ClassVar[dict[str, tuple[str, ...]]] = {"last_fired": ("L", "M"), "step": ()}

    def __init__(self, n_layers: int, d_model: int, n_features: int) -> None:
        super().__init__(n_layers, d_model, n_features)
        # Maxima across ranks, not sums; a feature that never fired has last_fired = -inf.
        never = torch.full((n_layers, n_features), float("-inf"), dtype=torch.float64)
        self.add_state("last_fired", never, dist_reduce_fx="max")
        self.add_state("step", torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def accumulate(self, b: Batch) -> None:
        self.update_fired(b.fired_LM)

    def update_fired(self, fired_LM: Tensor) -> None:
        """One training step: `fired_LM` [L, M] says which features fired on its batch."""
        self.last_fired = torch.where(fired_LM, self.step, self.last_fired)
        self.step = self.step + 1

    def dead_fraction(self, window_steps: int) -> Tensor:
        """Fraction of features with no firing in the last `window_steps` updates."""
        with self.sync_context():
            return (self.last_fired < self.step - window_steps).double().mean(-1)

    def compute(self) -> Tensor:
        raise NotImplementedError("use dead_fraction(window_steps)")


def cross_layer_stats(l0_L: list[float], mean_norm_L: list[float]) -> dict[str, float | None]:
    """Across layers: Pearson r between each layer's mean input norm and its mean L0, and the
    coefficient of variation (std / mean, population std) of the mean L0 across layers."""
    l0, norm = (
        torch.tensor(l0_L, dtype=torch.float64),
        torch.tensor(mean_norm_L, dtype=torch.float64),
    )
    cv = (l0.std(correction=0) / l0.mean()).item()
    if len(l0) < 2 or l0.std() == 0 or norm.std() == 0:
        return {"l0_cv": cv, "norm_l0_corr": None}
    r = torch.corrcoef(torch.stack([norm, l0]))[0, 1].item()
    return {"l0_cv": cv, "norm_l0_corr": r}


def density_histogram(density_LM: Tensor, layers: list[int]) -> dict[str, dict[str, list]]:
    """Per layer: how many features fire with each log10 frequency (12 bins from 1e-6 to 1;
    rarer ones fall in the first bin), and how many never fired."""
    edges = torch.linspace(-6, 0, 13, dtype=torch.float64)
    out = {}
    for j, layer in enumerate(layers):
        d = density_LM[j].double().cpu()
        log_d = d[d > 0].log10().clamp(-6, 0)
        counts = torch.histogram(log_d, bins=edges).hist.long().tolist()
        out[f"layer_{layer}"] = {
            "log10_edges": edges.tolist(),
            "counts": counts,
            "never_fired": int((d == 0).sum()),
        }
    return out
