"""Synthetic activations with known features (`source.kind: synthetic`), on sae_lens.synthetic.

Each synthetic layer l is a `sae_lens.synthetic.SyntheticModel` built locally from the
`SyntheticModelConfig` in `source.model` (its `to_dict` layout), seeded `model.seed + 1000 l`
(no download). It draws ground-truth feature activations g_t in R^F (Zipfian firing,
hierarchy, correlations, per-feature magnitudes) and maps them through its dictionary
V^l [F, D] and fixed bias b^l. nsae's norm premise goes on top, with a per-token factor s_t
(shared by all layers of the token) and a per-layer scale s_l = layer_growth^l:

    f_t^l = s_t s_l g_t^l                       (the true feature activations, reported)
    x_t^l = V^l^T f_t^l + c_t^l b^l,    c_t^l = s_l        (token_norm.scales_bias: false)
                                        c_t^l = s_t s_l    (token_norm.scales_bias: true)

so x is exactly the true features' sum plus a bias, and the truth stays exact. By default
the token factor does not scale the bias: the bias is a fixed per-layer offset, as an SAE's
b_dec is, so an SAE can represent x exactly. The factor multiplies g after sae_lens' own
sampling (hierarchy, ReLU included); positive scaling commutes with the ReLU, and scaling
before the hierarchy modifier would square it for children scaled by their parent.

s_t (`token_norm.kind`): none (s = 1); lognormal (s = exp(sigma z), z ~ N(0, 1), median 1);
mixture (the lognormal times outlier_scale for a random outlier_frac of tokens, like
attention sinks). With `tie_to_l0` the same factors are assigned to the chunk's tokens in
the order of their true L0 summed over layers (co-monotone; ties broken at random), so the
marginal of s_t is unchanged and high-norm tokens are the ones with more true features.

Streams are deterministic: `sample(n, stream, index)` seeds the device's global generator
(which sae_lens samples from, forked so that no other random state changes) from
sha256(seed, stream, index). Training chunk k of rank r of w is index k w + r of the "train"
stream: the ranks' shares are disjoint, each is reproducible, together they are the 1-rank
stream, and skipping k chunks costs nothing. "norm", "eval" and "validation" (read under
data.eval_split=validation, for tuning) are separate streams. Results are reproducible per
device type (CPU and CUDA generators differ).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nsae import rng
from nsae.data.massive import Massive
from nsae.errors import NsaeError

TOKEN_NORM_KINDS = ("none", "lognormal", "mixture")
EVAL_STREAMS = ("eval", "validation")  # data.eval_split on a synthetic source
LAYER_SEED_STRIDE = 1000  # sae_lens offsets a model's seed by 0..4 for its parts
INSTALL = 'pip install -e ".[saelens]"'


def _sae_lens_synthetic() -> Any:
    try:
        import sae_lens.synthetic as synthetic
    except ImportError:
        raise NsaeError(f"source.kind=synthetic needs sae_lens; install it: {INSTALL}") from None
    return synthetic


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def stream_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed from (run seed, stream name, index), stable across processes."""
    digest = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def synthetic_dims(source: Any) -> tuple[int, int]:
    """(n_layers, d_model) of a synthetic source config, without building its models."""
    n_layers, d = source.get("n_layers"), source.get("model", {}).get("hidden_dim")
    for name, v in (("source.n_layers", n_layers), ("source.model.hidden_dim", d)):
        if not isinstance(v, int) or v <= 0:
            raise NsaeError(f"{name}={v!r}; valid: an integer > 0")
    return n_layers, d


@dataclass(frozen=True)
class TokenNorm:
    """The per-token norm factor s_t (see the module docstring)."""

    kind: str = "none"
    sigma: float = 0.0
    outlier_frac: float = 0.0
    outlier_scale: float = 1.0
    tie_to_l0: bool = False
    scales_bias: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TOKEN_NORM_KINDS:
            raise NsaeError(
                f"source.token_norm.kind={self.kind!r}; valid: {', '.join(TOKEN_NORM_KINDS)}"
            )
        if self.sigma < 0 or self.outlier_scale <= 0 or not 0 <= self.outlier_frac <= 1:
            raise NsaeError(
                f"source.token_norm: sigma={self.sigma}, outlier_frac={self.outlier_frac}, "
                f"outlier_scale={self.outlier_scale}; valid: sigma >= 0, 0 <= outlier_frac "
                "<= 1, outlier_scale > 0"
            )

    def sample(self, l0_N: Tensor) -> Tensor:
        """s_N for tokens whose true L0 (summed over layers) is `l0_N`, from the global RNG."""
        n, device = len(l0_N), l0_N.device
        s_N = torch.ones(n, device=device)
        if self.kind == "none":
            return s_N
        if self.sigma > 0:
            s_N = torch.exp(self.sigma * torch.randn(n, device=device))
        if self.kind == "mixture":
            outlier_N = torch.rand(n, device=device) < self.outlier_frac
            s_N = torch.where(outlier_N, s_N * self.outlier_scale, s_N)
        if self.tie_to_l0:
            order_N = (l0_N.float() + 0.5 * torch.rand(n, device=device)).argsort()
            s_N = torch.empty_like(s_N).index_put_((order_N,), s_N.sort().values)
        return s_N


@dataclass
class SyntheticBatch:
    """Tokens with their truth: x_NLD = f_NLF @ V + bias (see the module docstring)."""

    x_NLD: Tensor
    f_NLF: Tensor | None  # true feature activations, scaled like x (None: not requested)
    s_N: Tensor  # the token norm factor s_t
    massive_N: Tensor | None = None  # which tokens carry the massive directions (if any)


class SyntheticSource:
    """A synthetic activation source for the chosen `layers` (indices below n_layers).

    `cfg` is the `source` config: n_layers, layers, chunk_tokens, layer_growth,
    token_norm {kind, sigma, outlier_frac, outlier_scale, tie_to_l0, scales_bias}, and
    model (a SyntheticModelConfig dict). `seed` drives the streams (not the models, whose
    seed is `model.seed`, so every condition of a grid shares the same truth).
    """

    def __init__(
        self, cfg: Any, layers: list[int], seed: int, device: torch.device | str,
        eval_stream: str = "eval",
    ) -> None:  # fmt: skip
        synthetic = _sae_lens_synthetic()
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
        n_layers, self.d_model = synthetic_dims(cfg)
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad or not layers:
            raise NsaeError(
                f"synthetic layers {list(layers)}; valid: 0..{n_layers - 1} (source.n_layers)"
            )
        self.cfg, self.layers, self.seed = cfg, list(layers), seed
        self.device = torch.device(device)
        if eval_stream not in EVAL_STREAMS:
            valid = ", ".join(EVAL_STREAMS)
            raise NsaeError(
                f"data.eval_split={eval_stream!r} on a synthetic source; valid: {valid}"
            )
        self.eval_stream = eval_stream  # "validation": where a tuning sweep chooses
        self.chunk_tokens = int(cfg.get("chunk_tokens", 4096))
        self.token_norm = TokenNorm(**(_plain(cfg.get("token_norm")) or {}))
        growth = float(cfg.get("layer_growth", 1.0))
        if growth <= 0:
            raise NsaeError(f"source.layer_growth={growth}; valid: > 0")
        self.layer_scale_L = torch.tensor([growth**i for i in self.layers], device=self.device)
        model = dict(_plain(cfg.model))
        base_seed = model.get("seed") or 0
        self.models = []
        for layer in self.layers:
            try:
                model_cfg = synthetic.SyntheticModelConfig.from_dict(
                    {**model, "seed": base_seed + LAYER_SEED_STRIDE * layer}
                )
            except (TypeError, ValueError, KeyError) as err:
                raise NsaeError(f"source.model: {err}") from None
            self.models.append(synthetic.SyntheticModel(model_cfg, device=str(self.device)))
        self.dict_LFD = torch.stack([m.feature_dict.feature_vectors.detach() for m in self.models])
        self.bias_LD = torch.stack([m.feature_dict.bias.detach() for m in self.models])
        self.massive = Massive(**(_plain(cfg.get("massive")) or {}))
        if self.massive.on:  # (nsae.data.massive) true features of their own, appended
            self.typical_L = self._typical_norms(base_seed)
            rows_LMD = self.massive.directions(self.d_model, base_seed, len(self.layers))
            self.dict_LFD = torch.cat([self.dict_LFD, rows_LMD.to(self.dict_LFD)], dim=1)
        self.n_features_true = self.dict_LFD.shape[1]

    @torch.no_grad()
    def _typical_norms(self, seed: int) -> Tensor:
        """Each layer's median ||x|| before the premise, on a fixed calibration sample."""
        cuda = [self.device] if self.device.type == "cuda" else []
        with rng.GLOBAL_LOCK, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(stream_seed(seed, "massive-calibration", 0))
            norms = [
                (m.activation_generator.sample(4096) @ self.dict_LFD[j] + self.bias_LD[j])
                .norm(dim=-1)
                .median()
                for j, m in enumerate(self.models)
            ]
        return torch.stack(norms)

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n_tokens: int, stream: str, index: int, with_features: bool = True
    ) -> SyntheticBatch:
        """n tokens of one stream at one index: the same (seed, stream, index, n) gives the
        same batch on the same device type."""
        cuda = [self.device] if self.device.type == "cuda" else []
        with rng.GLOBAL_LOCK, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(stream_seed(self.seed, stream, index))
            g_LNF = [m.activation_generator.sample(n_tokens) for m in self.models]
            l0_N = sum(((g > 0).sum(-1) for g in g_LNF), torch.zeros((), device=self.device))
            s_N = self.token_norm.sample(l0_N)
            carriers_N = self.massive.carriers(n_tokens, self.device) if self.massive.on else None
        scale_NL = s_N[:, None] * self.layer_scale_L  # s_t s_l
        bias_scale_NL = scale_NL if self.token_norm.scales_bias else self.layer_scale_L[None]
        x_NLD = torch.stack(
            [g @ self.dict_LFD[j, : g.shape[-1]] for j, g in enumerate(g_LNF)], dim=1
        )
        x_NLD = scale_NL[..., None] * x_NLD + bias_scale_NL[..., None] * self.bias_LD
        f_NLF = torch.stack(g_LNF, dim=1) * scale_NL[..., None] if with_features else None
        if carriers_N is not None:
            amplitude_L = self.massive.magnitude * self.typical_L * self.layer_scale_L
            m_NLM = self.massive.activations(carriers_N, amplitude_L)
            rows_LMD = self.dict_LFD[:, -self.massive.n_directions :]
            x_NLD = x_NLD + torch.einsum("nlm,lmd->nld", m_NLM, rows_LMD)
            f_NLF = None if f_NLF is None else torch.cat([f_NLF, m_NLM], dim=-1)
        return SyntheticBatch(x_NLD, f_NLF, s_N, carriers_N)

    def _pieces(self, n_tokens: int, stream: str) -> Tensor:
        """x [n, L, D] of a stream's first n tokens, drawn chunk_tokens at a time."""
        counts = [self.chunk_tokens] * (-(-n_tokens // self.chunk_tokens))
        parts = [self.sample(c, stream, i, with_features=False).x_NLD for i, c in enumerate(counts)]
        return torch.cat(parts)[:n_tokens]

    def train_chunks(
        self, chunk_tokens: int, rank: int = 0, world: int = 1, skip: int = 0
    ) -> Iterator[Tensor]:
        """This rank's endless training chunks [chunk_tokens, L, D], after `skip` of them:
        chunk k is index k * world + rank of the "train" stream."""
        for k in itertools.count(skip):
            yield self.sample(chunk_tokens, "train", k * world + rank, with_features=False).x_NLD

    def norm_sample(self, n_tokens: int) -> Tensor:
        """[n, L, D] from the training distribution ("norm" stream; the same on every rank,
        disjoint from the training and evaluation tokens)."""
        return self._pieces(n_tokens, "norm")

    def eval_indices(
        self, n_tokens: int, batch_tokens: int, rank: int = 0, world: int = 1
    ) -> list[int]:
        """This rank's share of the fixed evaluation set: ceil(n / batch_tokens) batches of
        batch_tokens tokens (n rounded up), batch i on rank i mod world."""
        return list(range(-(-n_tokens // batch_tokens)))[rank::world]

    def eval_batch(self, index: int, batch_tokens: int) -> SyntheticBatch:
        """Evaluation batch `index` (of the eval_stream), with its true features."""
        return self.sample(batch_tokens, self.eval_stream, index)

    def eval_batches(
        self, n_tokens: int, batch_tokens: int, rank: int = 0, world: int = 1
    ) -> list[SyntheticBatch]:
        """This rank's evaluation batches, materialised (see `eval_indices`)."""
        indices = self.eval_indices(n_tokens, batch_tokens, rank, world)
        return [self.eval_batch(i, batch_tokens) for i in indices]

    # -- persistence -------------------------------------------------------------------------
    def premise(self) -> dict[str, Any]:
        """The norm premise applied on top of the models, as saved with them."""
        found = {
            "token_norm": asdict(self.token_norm),
            "layer_growth": float(self.cfg.get("layer_growth", 1.0)),
            "layer_scale": {
                f"layer_{i}": s
                for i, s in zip(self.layers, self.layer_scale_L.tolist(), strict=True)
            },
            "stream_seed": self.seed,
        }
        if self.massive.on:
            seed = int(self.cfg.model.get("seed") or 0)
            found["massive"] = {
                **asdict(self.massive),
                "dims": self.massive.dims(self.d_model, seed).tolist(),
                "typical_norm": dict(
                    zip([f"layer_{i}" for i in self.layers], self.typical_L.tolist(), strict=True)
                ),
            }
        return found

    def save(self, root: Path) -> None:
        """<root>/layer_<i>/ (SyntheticModel.save: its config, dictionary, bias and firing
        probabilities) and <root>/premise.json (a run directory's `synthetic/`)."""
        root = Path(root)
        for layer, model in zip(self.layers, self.models, strict=True):
            model.save(root / f"layer_{layer}")
        (root / "premise.json").write_text(json.dumps(self.premise(), indent=2) + "\n")
