"""Every variant exports in the SAELens layout; SAELens' own `SAE.load_from_disk` and
`nsae.export.load` read it back to the same encodings as the trained bank."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nsae.export import export_saes, load
from nsae.saes import build_sae

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is an optional extra: .[saelens]")

LAYERS = [1, 3]
META = {"model_name": "m", "hook_site": "resid_post", "context_size": 8}
CASES = {  # sae_type: (hparams, SAELens architecture, extra weights)
    "none": ({"l1_weighting": "decoder_norm"}, "standard", set()),
    "normalized_sae": ({"noise_std": 0.1}, "normalized_sae", set()),
    "topk": ({"k": 5}, "topk", set()),
    "batchtopk": ({"k": 5, "threshold_lr": 0.5}, "jumprelu", {"threshold"}),
    "matryoshka": ({"k": 5, "threshold_lr": 0.5, "prefixes": [8, 16]}, "jumprelu", {"threshold"}),
    "jumprelu": ({"init_threshold": 0.2}, "jumprelu", {"threshold"}),
    "gated": ({}, "gated", {"b_gate", "b_mag", "r_mag"}),
}


@pytest.mark.parametrize("sae_type", list(CASES))
def test_saelens_and_nsae_load_every_variant_to_the_same_encodings(sae_type, tmp_path) -> None:
    import nsae.saelens

    hparams, arch, extra = CASES[sae_type]
    torch.manual_seed(0)
    bank = build_sae(sae_type, len(LAYERS), 8, 32, **hparams)
    with torch.no_grad():  # nonzero biases and thresholds, as after training
        for name, param in bank.named_parameters():
            if not name.startswith("W_"):
                param.add_(0.1 * torch.randn_like(param))
        for _ in range(3):
            bank.train_forward(2 * torch.randn(64, len(LAYERS), 8))
    folders = export_saes(bank, LAYERS, torch.rand(len(LAYERS), 32), tmp_path, META)
    bank.eval()
    x_BD = 2 * torch.randn(100, 8)
    with torch.no_grad():
        x_hat_bank, f_bank = bank(x_BD[:, None].expand(-1, len(LAYERS), -1))
    nsae.saelens.register()  # only normalized_sae needs it
    for j, folder in enumerate(folders):
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["architecture"] == arch
        assert cfg["nsae"]["sae_type"] == sae_type
        weights = load_file(str(folder / "sae_weights.safetensors"))
        base = {"W_enc", "W_dec", "b_dec"} | ({"b_enc"} if sae_type != "gated" else set())
        assert set(weights) == base | extra
        lens = sae_lens.SAE.load_from_disk(str(folder))
        ours = load(folder)
        assert lens.cfg.architecture() == arch and not ours.training
        with torch.no_grad():
            f_ours = ours(x_BD[:, None])[1][:, 0]
            torch.testing.assert_close(lens.encode(x_BD), f_ours, rtol=0, atol=1e-5)
            torch.testing.assert_close(f_ours, f_bank[:, j], rtol=0, atol=1e-6)
            torch.testing.assert_close(lens(x_BD), x_hat_bank[:, j], rtol=0, atol=1e-5)
        assert (f_ours > 0).any() and (f_ours == 0).any()


def test_topk_cfg_carries_k_and_thresholds_are_the_learned_ones(tmp_path) -> None:
    bank = build_sae("batchtopk", 2, 8, 32, k=4, threshold_lr=0.5)
    bank.train_forward(torch.randn(64, 2, 8))
    folders = export_saes(bank, [0, 1], torch.rand(2, 32), tmp_path, META)
    for j, folder in enumerate(folders):
        threshold = load_file(str(folder / "sae_weights.safetensors"))["threshold"]
        torch.testing.assert_close(threshold, bank.threshold_L[j].expand(32))
    topk = build_sae("topk", 1, 8, 32, k=7)
    (folder,) = export_saes(topk, [0], torch.rand(1, 32), tmp_path / "topk", META)
    assert json.loads((folder / "cfg.json").read_text())["k"] == 7
    assert sae_lens.SAE.load_from_disk(str(folder)).cfg.k == 7
