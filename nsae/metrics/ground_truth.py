"""Ground-truth metrics on synthetic data, per layer, under SAELens' names and definitions
(`sae_lens.synthetic.evals`), for an SAE bank evaluated on a `SyntheticSource`.

Per layer l, with SAE decoder rows d_i (i < M latents), true dictionary rows v_j (j < F) and
cos_ij = |<d_i, v_j>| / (||d_i|| ||v_j||) (norms clamped at 1e-8):
- `mcc`: the mean of cos_ij over the one-to-one matching of latents and true features that
  maximises its sum (Hungarian; min(M, F) pairs).
- `uniqueness`: #{distinct argmax_j cos_ij over latents i} / M.
- `mcc_random` (nsae): the `mcc` of M Gaussian random directions (`random_directions`)
  against the same true dictionary: what a decoder that learned nothing scores (computed
  once per metric).
- Each latent i is a detector of its best match j(i) = argmax_j cos_ij, and over tokens
  TP_i = #{f_i != 0, g_j(i) > 0}, FP_i = #{f_i != 0, g_j(i) = 0}, FN_i = #{f_i = 0, g_j(i) > 0}:
  `precision` = mean_i TP_i / (TP_i + FP_i), `recall` = mean_i TP_i / (TP_i + FN_i),
  `f1` = mean_i 2 P_i R_i / (P_i + R_i); an undefined ratio counts as 0 (so does a latent
  that never fires), as in SAELens.
- `shrinkage`: the mean over tokens with ||x|| > 1e-6 of ||x_hat|| / ||x||.
- `true_l0`: the mean over tokens of #{j : g_j != 0}; `excess_l0` (nsae): the SAE's
  mean #{i : f_i != 0} minus `true_l0`.

`mcc` and `uniqueness` depend on the decoder only: `set_decoder` computes them (and the best
matches) once per evaluation, identically on every rank. The counts are float64 sum states,
so every token-based value is exact under DDP. With decile edges [L, 9] (see
`nsae.metrics.binned.decile_edges`), every token-based metric is also kept per norm decile
of the token's ||x|| (bin k: edges[k-1] <= ||x|| < edges[k]); `excess_l0` against the
decile is the cleanest measure of a norm bias, since the truth's L0 is known per token.
On a source with massive directions (`nsae.data.massive`) the evaluation keeps a second
instance over the tokens that do not carry them: its token metrics are reported with the
suffix NO_OUTLIERS (`f1_no_outliers`, ...).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nsae.errors import NsaeError
from nsae.metrics.base import ShapedMetric
from nsae.metrics.binned import N_DECILES
from nsae.metrics.summary import finite_or_none

TOKEN_METRICS = ("precision", "recall", "f1", "shrinkage", "true_l0", "excess_l0")
DECODER_METRICS = ("mcc", "uniqueness", "mcc_random")
NAMES = (*DECODER_METRICS, *TOKEN_METRICS)
_COUNTS = ("n", "true_l0", "sae_l0", "shrink", "shrink_n", "norm")  # per [L, K]
_LATENT_COUNTS = ("tp", "fp", "fn")  # per [L, K, M]
MIN_INPUT_NORM = 1e-6
NO_OUTLIERS = "_no_outliers"  # the token metrics' suffix over the tokens without massive directions


RANDOM_SEED = 0x5EEDBA5E  # not a small seed: sae_lens draws its true dictionary with torch.randn
# under the model's seed, so randn(M, D) under seed 0 reproduces a seed-0 truth exactly


def random_directions(m: int, d: int) -> Tensor:
    """m Gaussian random directions in R^d, [m, d], the same on every call."""
    gen = torch.Generator().manual_seed(RANDOM_SEED)
    return torch.randn(d, m, generator=gen).T.contiguous()


def abs_cosine(a_MD: Tensor, b_FD: Tensor) -> Tensor:
    """|cos| between every row of a and every row of b, [M, F] (norms clamped at 1e-8)."""
    a = a_MD / a_MD.norm(dim=1, keepdim=True).clamp(min=1e-8)
    b = b_FD / b_FD.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return (a @ b.T).abs()


def mcc_and_uniqueness(cos_MF: Tensor) -> tuple[float, float]:
    """(mcc, uniqueness) from |cos| [M, F] (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    cos = cos_MF.detach().float().cpu()
    rows, cols = linear_sum_assignment(1 - cos.numpy())
    mcc = cos[torch.as_tensor(rows), torch.as_tensor(cols)].double().mean().item()
    uniqueness = len(cos.argmax(1).unique()) / cos.shape[0] if cos.shape[0] else 0.0
    return mcc, uniqueness


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))


class GroundTruthMetrics(ShapedMetric):
    """Per layer [L] (and per norm decile [L, 10] when given edges): the metrics above.

    Call `set_decoder(W_dec_LMD)` before each evaluation's updates, then
    `update(x_NLD, x_hat_NLD, f_NLM, g_NLF)` with the SAE's input, reconstruction and
    features and the tokens' true feature activations (`SyntheticBatch.f_NLF`).
    """

    def __init__(self, true_dict_LFD: Tensor, n_features: int, edges_L9: Tensor | None = None):
        super().__init__()
        L = true_dict_LFD.shape[0]
        self.register_buffer("true_dict_LFD", true_dict_LFD.detach().clone(), persistent=False)
        self.binned = edges_L9 is not None
        if edges_L9 is not None:
            edges_L9 = torch.as_tensor(edges_L9, dtype=torch.float64)
            if edges_L9.shape != (L, N_DECILES - 1) or (edges_L9.diff(dim=-1) < 0).any():
                raise NsaeError(
                    f"norm decile edges have shape {tuple(edges_L9.shape)}; expected "
                    f"non-decreasing [n_layers, 9] = [{L}, 9]"
                )
            self.register_buffer("edges_L9", edges_L9.contiguous(), persistent=False)
        K = N_DECILES if self.binned else 1
        for name in _COUNTS:
            self.add_sum_state(name, (L, K))
        for name in _LATENT_COUNTS:
            self.add_sum_state(name, (L, K, n_features))
        self.register_buffer("best_LM", torch.full((L, n_features), -1), persistent=False)
        self.register_buffer(
            "decoder_L3", torch.full((L, 3), float("nan"), dtype=torch.float64), persistent=False
        )

    @torch.no_grad()
    def set_decoder(self, W_dec_LMD: Tensor) -> None:
        """Match the SAE's decoder rows to the true features: best matches, mcc, uniqueness."""
        for j in range(W_dec_LMD.shape[0]):
            cos_MF = abs_cosine(W_dec_LMD[j].float(), self.true_dict_LFD[j].to(W_dec_LMD.device))
            self.best_LM[j] = cos_MF.argmax(1).to(self.best_LM.device)
            self.decoder_L3[j, :2] = torch.tensor(mcc_and_uniqueness(cos_MF))
            if self.decoder_L3[j, 2].isnan():  # the random baseline, once
                random_MD = random_directions(*W_dec_LMD.shape[1:])
                truth_FD = self.true_dict_LFD[j].float().cpu()
                self.decoder_L3[j, 2] = mcc_and_uniqueness(abs_cosine(random_MD, truth_FD))[0]

    def copy_decoder(self, other: GroundTruthMetrics) -> None:
        """`set_decoder`'s results from another instance matched to the same decoder."""
        self.best_LM.copy_(other.best_LM)
        self.decoder_L3.copy_(other.decoder_L3)

    def _bins(self, x_NLD: Tensor) -> Tensor:
        """[N, L] the norm decile of each token (0 everywhere without edges)."""
        if not self.binned:
            return torch.zeros(x_NLD.shape[:2], dtype=torch.long, device=x_NLD.device)
        norm_LN = x_NLD.double().norm(dim=-1).T.contiguous()
        return torch.searchsorted(self.edges_L9.to(x_NLD.device), norm_LN, right=True).T

    @torch.no_grad()
    def update(self, x_NLD: Tensor, x_hat_NLD: Tensor, f_NLM: Tensor, g_NLF: Tensor) -> None:
        if (self.best_LM < 0).any():
            raise NsaeError("GroundTruthMetrics.update before set_decoder(W_dec_LMD)")
        K = self.n.shape[1]
        onehot_NLK = torch.nn.functional.one_hot(self._bins(x_NLD), K).double()
        best_NLM = self.best_LM.to(g_NLF.device).expand(g_NLF.shape[0], -1, -1)
        truth_NLM = (torch.gather(g_NLF, 2, best_NLM) > 0).double()
        fires_NLM = (f_NLM != 0).double()
        x_norm_NL = x_NLD.norm(dim=-1)
        valid_NL = x_norm_NL > MIN_INPUT_NORM
        ratio_NL = torch.where(valid_NL, x_hat_NLD.norm(dim=-1) / x_norm_NL.clamp(min=1e-30), 0)
        per_token = {
            "n": torch.ones_like(x_norm_NL),
            "true_l0": (g_NLF != 0).sum(-1),
            "sae_l0": fires_NLM.sum(-1),
            "shrink": ratio_NL,
            "shrink_n": valid_NL,
            "norm": x_norm_NL,
        }
        for name, v_NL in per_token.items():
            added_LK = torch.einsum("nlk,nl->lk", onehot_NLK, v_NL.double())
            setattr(self, name, getattr(self, name) + added_LK)
        per_latent = {
            "tp": fires_NLM * truth_NLM,
            "fp": fires_NLM * (1 - truth_NLM),
            "fn": (1 - fires_NLM) * truth_NLM,
        }
        for name, v_NLM in per_latent.items():
            added_LKM = torch.einsum("nlk,nlm->lkm", onehot_NLK, v_NLM)
            setattr(self, name, getattr(self, name) + added_LKM)

    @staticmethod
    def _token_metrics(c: dict[str, Tensor]) -> dict[str, Tensor]:
        """The token-based metrics from counts with any leading shape (latents last)."""
        precision = _safe_ratio(c["tp"], c["tp"] + c["fp"])
        recall = _safe_ratio(c["tp"], c["tp"] + c["fn"])
        f1 = _safe_ratio(2 * precision * recall, precision + recall)
        true_l0 = c["true_l0"] / c["n"]
        return {
            "precision": precision.mean(-1),
            "recall": recall.mean(-1),
            "f1": f1.mean(-1),
            "shrinkage": _safe_ratio(c["shrink"], c["shrink_n"]),
            "true_l0": true_l0,
            "excess_l0": c["sae_l0"] / c["n"] - true_l0,
        }

    def _counts(self, by_bin: bool) -> dict[str, Tensor]:
        names = _COUNTS + _LATENT_COUNTS
        return {k: getattr(self, k) if by_bin else getattr(self, k).sum(1) for k in names}

    def compute(self) -> dict[str, Tensor]:
        """{name: [L]} for every name in NAMES."""
        decoder = dict(zip(DECODER_METRICS, self.decoder_L3.double().unbind(-1), strict=True))
        return decoder | self._token_metrics(self._counts(False))

    def compute_by_decile(self) -> dict[str, Tensor]:
        """{name: [L, 10]} for the token metrics, and "count" [L, 10] (synced under DDP)."""
        if not self.binned:
            raise NsaeError("GroundTruthMetrics was built without norm decile edges")
        with self.sync_context():
            counts = self._counts(True)
        mean_norm = _safe_ratio(counts["norm"], counts["n"])
        return {"count": counts["n"], "mean_norm": mean_norm} | self._token_metrics(counts)

    def to_json(self, layers: list[int]) -> dict[str, Any]:
        """{"layer_<i>": [10 x {bin, lo, hi, count, mean_norm, precision, ..., excess_l0}]},
        null where a bin is empty or a value is not finite (mean_norm: of the bin's ||x||)."""
        values = {k: v.detach().cpu().tolist() for k, v in self.compute_by_decile().items()}
        edges = self.edges_L9.cpu().tolist()
        out = {}
        for j, layer in enumerate(layers):
            bounds = [None, *edges[j], None]
            rows = []
            for k in range(N_DECILES):
                count = int(values["count"][j][k])
                row = {"bin": k, "lo": bounds[k], "hi": bounds[k + 1], "count": count}
                row["mean_norm"] = finite_or_none(values["mean_norm"][j][k]) if count else None
                for name in TOKEN_METRICS:
                    row[name] = finite_or_none(values[name][j][k]) if count else None
                rows.append(row)
            out[f"layer_{layer}"] = rows
        return out
