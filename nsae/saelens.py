"""Load nsae exports in SAELens (optional: `pip install -e ".[saelens]"`).

Every variant but the Normalized SAE is exported as one of SAELens' own architectures and
loads with no help (`none` -> standard, `topk` -> topk, `jumprelu` -> jumprelu, `gated` ->
gated, `batchtopk` and `matryoshka` -> jumprelu with their learned thresholds):

    from sae_lens import SAE
    sae = SAE.load_from_disk("outputs/runs/.../layer_2")

The Normalized SAE is exported with `"architecture": "normalized_sae"`: the same weights
(W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec) and f = tanh(ReLU(W_enc^T
(x - b_dec) + b_enc)), x_hat = W_dec^T f + b_dec, with no noise (inference). SAELens learns
that architecture from one call, after which `SAE.load_from_disk` returns an SAELens SAE
whose output equals nsae's:

    import nsae.saelens
    nsae.saelens.register()
"""

from __future__ import annotations

import torch
from sae_lens import SAE as LensSAE
from sae_lens import StandardSAE, StandardSAEConfig, register_sae_class
from sae_lens.registry import SAE_CLASS_REGISTRY

ARCHITECTURE = "normalized_sae"


class NormalizedSAEConfig(StandardSAEConfig):
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE


class NormalizedSAE(StandardSAE):
    """SAELens' standard SAE with nsae's bounded tanh(ReLU) features."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(torch.tanh(torch.relu(hidden_pre)))


def register() -> None:
    """Teach SAELens the `normalized_sae` architecture (idempotent)."""
    if ARCHITECTURE not in SAE_CLASS_REGISTRY:
        register_sae_class(ARCHITECTURE, NormalizedSAE, NormalizedSAEConfig)


def load(path: str) -> LensSAE:
    """An nsae export of any architecture as an SAELens SAE (on the CPU)."""
    register()
    return LensSAE.load_from_disk(path, device="cpu")
