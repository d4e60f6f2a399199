"""The final evaluation on the embedded model, with SAEs whose answers are known."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from nsae.config import CONF_DIR
from nsae.data.datamodule import ActivationDataModule
from nsae.errors import NsaeError
from nsae.module import SAEModule
from nsae.saes import build_sae

LAYERS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def cfg():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["debug=fast", "data.n_eval_tokens=1024", "data.cache=false"],
        )


def evaluate(cfg, sae) -> dict[str, torch.Tensor]:
    return evaluated_module(cfg, sae).eval_results


def evaluated_module(cfg, sae) -> SAEModule:
    module = SAEModule(sae, LAYERS, "none", cfg.coeff, cfg.optim, cfg.metrics)
    dm = ActivationDataModule(cfg.data, cfg.source, LAYERS)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.test(module, datamodule=dm, verbose=False)
    return module


def identity_sae(d: int):
    """f = [ReLU(x), ReLU(-x)], x_hat = ReLU(x) - ReLU(-x) = x exactly."""
    sae = build_sae("none", len(LAYERS), d, 2 * d)
    eye = torch.eye(d).expand(len(LAYERS), d, d)
    with torch.no_grad():
        sae.W_enc_LDM.copy_(torch.cat([eye, -eye], dim=2))
        sae.W_dec_LMD.copy_(torch.cat([eye, -eye], dim=1))
        sae.b_enc_LM.zero_()
        sae.b_dec_LD.zero_()
    return sae


def test_identity_sae_scores_one_and_zero_kl(cfg) -> None:
    out = evaluate(cfg, identity_sae(128))
    torch.testing.assert_close(out["reconstruction_score"], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(out["kl"], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(out["fvu"], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    assert (out["ce_zero"] > out["ce_clean"] + 0.5).all()
    assert torch.isnan(out["norm_l0_corr"]).all()  # L0 = d on every token: undefined


def test_identity_sae_saebench_scores_and_norm_bins(cfg) -> None:
    module = evaluated_module(cfg, identity_sae(128))
    out, ones = module.eval_results, torch.ones(4, dtype=torch.float64)
    for name in ("kl_div_score", "ce_loss_score", "l2_ratio", "frac_alive"):
        torch.testing.assert_close(out[name], ones, msg=name)
    torch.testing.assert_close(out["l0_norm_slope"], torch.zeros(4, dtype=torch.float64))
    binned = module.binned_results()
    n_contexts, T = 1024 // 128, 128  # data.n_eval_tokens=1024 in contexts of 128 tokens
    for layer in LAYERS:
        rows = binned["by_norm_decile"][f"layer_{layer}"]
        assert sum(r["count"] for r in rows) == n_contexts * (T - 1)
        assert all(r["nmse"] == pytest.approx(0, abs=1e-9) for r in rows if r["count"])
        assert all(r["l0"] == 128 for r in rows if r["count"])  # every x_d is nonzero
        assert binned["by_norm_decile"]["position_0"][f"layer_{layer}"]["count"] == n_contexts
    assert binned["l0_norm_slope"]["mean"] == pytest.approx(0.0, abs=1e-9)


def test_zero_reconstruction_scores_zero(cfg) -> None:
    sae = build_sae("none", len(LAYERS), 128, 256)
    with torch.no_grad():
        sae.W_dec_LMD.zero_()  # x_hat = b_dec = 0 whatever the features
    out = evaluate(cfg, sae)
    for name in ("reconstruction_score", "l2_ratio"):
        torch.testing.assert_close(
            out[name], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0, msg=name
        )
    assert (out["kl"] > 0.1).all()
    # SAEBench's SAE forward keeps BOS/EOS/pad positions original while its zero ablation
    # zeroes them too, so a zero SAE scores exactly 0 only where a change at BOS reaches no
    # counted position: the last layer (test_saebench_agreement checks the definition)
    for name in ("kl_div_score", "ce_loss_score"):
        assert out[name][-1].item() == pytest.approx(0.0, abs=1e-9), name
        assert (out[name][:-1].abs() > 1e-4).all(), name


def test_normalized_sae_is_evaluated_without_noise(cfg) -> None:
    torch.manual_seed(0)
    sae = build_sae("normalized_sae", len(LAYERS), 128, 256, noise_std=1.0)
    first, second = evaluate(cfg, sae), evaluate(cfg, sae)
    for name in ("l0", "mse", "reconstruction_score"):
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_zero_eval_tokens_is_one_clear_error(cfg) -> None:
    bad = cfg.copy()
    bad.data.n_eval_tokens = 10**9
    with pytest.raises(NsaeError, match=r"split 'eval' has \d+ contexts of 128 tokens"):
        evaluate(bad, identity_sae(128))
