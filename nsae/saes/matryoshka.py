"""`sae_type=matryoshka`: the Matryoshka BatchTopK SAE (Bussmann et al. 2025,
Nabeshima 2024).

The dictionary's first m_1 < m_2 < ... < m_P = M features are nested prefixes
(`sae.prefixes`: fractions of M in (0, 1], or sizes >= 2; M is appended if missing). Each
prefix reconstructs on its own from the features BatchTopK selected among its first m_i:
    x_hat_i = b_d + sum_{j < m_i} f_j W_dec_j.
The loss is the SUM over prefixes of each prefix's normalised reconstruction term
    sum_i mean_tokens ||x - x_hat_i||^2 / ||x||^p,
as in SAELens: the full prefix (i = P) is the ordinary reconstruction term, the inner ones
travel as `aux_sq_err_BL` (with the AuxK term). Decoding is sparse; each inner prefix is
one more sparse decode of the same selected entries, with those beyond m_i weighted 0.

Selection, thresholds (eval and export as SAELens `jumprelu`), AuxK and the unit-norm
decoder: as `batchtopk`. feature_scaling: proportional. No sparsity coefficient:
`coeff.alpha` is unused and `coeff=beta` is refused. normalization_method: all.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from torch import Tensor

from nsae.saes.batchtopk import BatchTopKSAE
from nsae.saes.topk import sparse_decode


def prefix_sizes(prefixes: Sequence[float], n_features: int) -> list[int]:
    """Fractions (<= 1) or sizes (> 1) -> strictly increasing sizes ending at n_features."""
    sizes = [round(p * n_features) if p <= 1 else int(p) for p in prefixes]
    if sizes[-1:] != [n_features]:
        sizes.append(n_features)
    ok = all(0 < a < b for a, b in pairwise(sizes)) and sizes[0] > 0
    if not ok or sizes[-1] != n_features or any(s > n_features for s in sizes):
        raise ValueError(
            f"sae.prefixes={list(prefixes)} gives sizes {sizes}; valid: strictly increasing "
            f"fractions in (0, 1] or sizes in 1..{n_features}"
        )
    return sizes


class MatryoshkaSAE(BatchTopKSAE, name="matryoshka"):
    def __init__(
        self, *args: Any, prefixes: Sequence[float] = (0.0625, 0.25, 1.0), **kwargs: Any
    ) -> None:
        """BatchTopKSAE's arguments (n_layers, d_model, n_features, k, ...) and `prefixes`."""
        super().__init__(*args, **kwargs)
        self.prefixes = [float(p) for p in prefixes]
        self.prefix_sizes = prefix_sizes(self.prefixes, self.n_features)

    def prefix_sq_errs(self, x_BLD: Tensor, entries: tuple[Tensor, Tensor, Tensor]) -> list[Tensor]:
        """||x - x_hat_i||^2 per token [B, L] for each inner prefix m_1 .. m_{P-1}."""
        key_N, m_N, v_N = entries
        out = []
        for size in self.prefix_sizes[:-1]:
            v_in_N = v_N * (m_N < size)
            x_hat_BLD = self.b_dec_LD + sparse_decode(
                self.W_dec_LMD, key_N, m_N, v_in_N, x_BLD.shape[0]
            )
            out.append((x_BLD - x_hat_BLD).pow(2).sum(-1))
        return out

    def extra_sq_err(self, x_BLD: Tensor, entries: tuple[Tensor, Tensor, Tensor]) -> Tensor | None:
        errs = self.prefix_sq_errs(x_BLD, entries)
        return sum(errs[1:], errs[0]) if errs else None

    def hparams(self) -> dict[str, object]:
        return super().hparams() | {"prefixes": self.prefixes}
