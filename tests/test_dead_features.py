"""dead_fraction counts what fires without the Normalized SAE's training noise."""

from __future__ import annotations

import torch

from nsae.metrics import RecentFiring
from nsae.saes import build_sae


def test_a_feature_firing_only_through_training_noise_counts_as_dead() -> None:
    torch.manual_seed(0)
    sae = build_sae("normalized_sae", 1, 4, 3, noise_std=10.0).train()
    with torch.no_grad():
        sae.W_enc_LDM.zero_()
        sae.b_dec_LD.zero_()
        sae.b_enc_LM.copy_(torch.tensor([[-1.0, 2.0, -50.0]]))  # pre: -1, 2, -50 on any x
    out = sae.train_forward(torch.randn(256, 1, 4))
    noisy_fired = (out.f_BLM > 0).any(0)
    assert noisy_fired[0, 0], "the noise should make feature 0 fire on some token"
    assert out.fired_LM.tolist() == [[False, True, False]]  # without noise: only feature 1
    recent = RecentFiring(1, 4, 3)
    recent.update_fired(out.fired_LM)
    assert recent.dead_fraction(window_steps=1).tolist() == [2 / 3]
