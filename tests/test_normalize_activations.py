"""`data.normalize_activations=expected_norm`: the SAE trains on s_l x with
s_l = sqrt(d) / mean ||x^l|| over the norm sample; evaluation and export are in raw units."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nsae.checks import validate
from nsae.config import CONF_DIR
from nsae.data.norms import add_input_scales, input_scales, norm_statistics
from nsae.errors import NsaeError


def test_expected_norm_scale_makes_the_sample_mean_norm_sqrt_d() -> None:
    g = torch.Generator().manual_seed(0)
    L, D = 3, 16
    x_NLD = torch.randn(500, L, D, generator=g) * torch.tensor([0.1, 3.0, 40.0])[:, None]
    x_NLD *= torch.rand(500, 1, 1, generator=g) * 5  # heavy per-token spread
    layers = [2, 5, 7]
    stats = norm_statistics(x_NLD, layers)
    add_input_scales(stats, layers, "expected_norm", D)
    s_L = np.array([stats[f"layer_{i}"]["input_scale"] for i in layers])
    scaled = x_NLD.double().numpy() * s_L[:, None]
    mean_norm_L = np.linalg.norm(scaled, axis=-1).mean(0)  # independent: numpy
    np.testing.assert_allclose(mean_norm_L, math.sqrt(D), rtol=1e-9)
    np.testing.assert_allclose(input_scales(stats, layers).numpy(), s_L, rtol=1e-6)

    add_input_scales(stats, layers, "none", D)
    assert input_scales(stats, layers).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="valid: none, expected_norm"):
        add_input_scales(stats, layers, "unit", D)


def test_bad_method_is_refused_in_one_line() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["data.normalize_activations=unit_norm", "debug=tiny"])
    assert cfg.data.normalize_activations == "unit_norm"
    with pytest.raises(NsaeError) as err:
        validate(cfg)
    assert str(err.value) == ("data.normalize_activations='unit_norm'; valid: none, expected_norm")


@pytest.mark.parametrize("sae_type", ["none", "normalized_sae", "topk", "jumprelu"])
def test_fold_is_exact_raw_units_and_validation_restores_the_training_weights(
    sae_type: str,
) -> None:
    from nsae.module import SAEModule
    from nsae.saes import build_sae

    torch.manual_seed(0)
    L, D, M = 3, 8, 32
    kwargs = {"topk": {"k": 4}, "normalized_sae": {"noise_std": 0.1}}.get(sae_type, {})
    sae = build_sae(sae_type, L, D, M, **kwargs)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    metrics = OmegaConf.create(
        {"splice": False, "train": ["l0"], "eval": ["l0"], "dead_window_tokens": 64}
    )
    module = SAEModule(sae, [0, 1, 2], "none", OmegaConf.create({}), None, metrics)
    module.eval()
    s_L = torch.tensor([0.5, 2.0, 7.0])
    module.input_scale_L.copy_(s_L)
    module.scaled = True
    x_BLD = torch.randn(64, L, D) * 3
    before = copy.deepcopy(sae.state_dict())
    with torch.no_grad():
        x_hat_ref, f_ref = sae(x_BLD * s_L[:, None])
        x_hat_ref = x_hat_ref / s_L[:, None]
        module.on_validation_epoch_start()
        x_hat, f = sae(x_BLD)
        torch.testing.assert_close(x_hat, x_hat_ref, rtol=1e-5, atol=1e-5)
        # proportional features come out in raw units (f / s), bounded ones unchanged
        f_want = f_ref if sae.feature_scaling == "bounded" else f_ref / s_L[:, None]
        torch.testing.assert_close(f, f_want, rtol=1e-5, atol=1e-5)
        module.restore_training_weights()
        for key, v in sae.state_dict().items():
            assert torch.equal(v, before[key]) if isinstance(v, torch.Tensor) else v == before[key]
        module.on_test_epoch_start()  # the final evaluation folds for good
        torch.testing.assert_close(sae(x_BLD)[0], x_hat_ref, rtol=1e-5, atol=1e-5)
    if sae_type == "none":  # the ReLU SAE: b_d, b_e divided by s_l, weights untouched
        torch.testing.assert_close(sae.b_dec_LD, before["b_dec_LD"] / s_L[:, None])
        torch.testing.assert_close(sae.b_enc_LM, before["b_enc_LM"] / s_L[:, None])
        assert torch.equal(sae.W_enc_LDM, before["W_enc_LDM"])
        assert torch.equal(sae.W_dec_LMD, before["W_dec_LMD"])


# -- end to end: train with expected_norm, then check raw-unit metrics and the export ------


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory) -> Path:
    from tests.conftest import run_cli

    run_dir = tmp_path_factory.mktemp("expected_norm") / "run"
    proc = run_cli(
        "debug=tiny",
        "data.normalize_activations=expected_norm",
        "data.cache=false",
        "metrics.splice=false",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _training_sae(run_dir: Path, cfg):
    """The SAE in training units, from the last checkpoint (written before the fold)."""
    from nsae.constants import SAE_COMMON_KEYS
    from nsae.saes import build_sae

    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("sae.")}
    L, D, M = state["W_enc_LDM"].shape[0], state["W_enc_LDM"].shape[1], state["b_enc_LM"].shape[1]
    kwargs = {k: v for k, v in cfg.sae.items() if k not in SAE_COMMON_KEYS}
    sae = build_sae(cfg.sae.type, L, D, M, **kwargs)
    sae.load_state_dict(state)
    return sae.eval()


@pytest.mark.slow
def test_metrics_are_raw_units_and_the_export_maps_raw_to_raw(scaled_run: Path) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    from nsae.data.datamodule import ActivationDataModule
    from nsae.export import load

    cfg = OmegaConf.load(scaled_run / "config.yaml")
    layers = json.loads((scaled_run / "metrics.json").read_text())["layers"]
    stats = json.loads((scaled_run / "norm_stats.json").read_text())["layers"]
    sae = _training_sae(scaled_run, cfg)
    D = sae.d_model
    s_L = torch.tensor([stats[f"layer_{i}"]["input_scale"] for i in layers])
    means = torch.tensor([stats[f"layer_{i}"]["mean"] for i in layers], dtype=torch.float64)
    torch.testing.assert_close(s_L.double(), math.sqrt(D) / means)
    assert (s_L - 1).abs().min() > 0.05  # the test means something: scales far from 1

    # Independent evaluation on raw x: the training-unit SAE on s x, x_hat divided by s.
    dm = ActivationDataModule(cfg.data, cfg.source, layers, cfg.seed)
    dm.setup()
    sse_L, n, l0_L, xs = torch.zeros(len(layers), dtype=torch.float64), 0, 0.0, []
    with torch.no_grad():
        for ids_BT in dm.eval_ids.split(cfg.data.harvest_batch):
            x_NLD = dm.acts.harvest(ids_BT)[0]
            x_hat_NLD, f_NLM = sae(x_NLD * s_L[:, None])
            x_hat_NLD = x_hat_NLD / s_L[:, None]
            sse_L += (x_hat_NLD - x_NLD).double().pow(2).sum(-1).sum(0)
            l0_L = l0_L + (f_NLM > 0).double().sum(-1).sum(0)
            n += len(x_NLD)
            xs.append(x_NLD)
    metrics = json.loads((scaled_run / "metrics.json").read_text())["metrics"]
    for j, layer in enumerate(layers):
        key = f"layer_{layer}"
        assert metrics["mse"][key] == pytest.approx(sse_L[j].item() / n, rel=1e-4)
        assert metrics["l0"][key] == pytest.approx(l0_L[j].item() / n, rel=1e-4)

    # The export: SAELens on raw x gives nsae's encoding and the raw reconstruction.
    x_NLD = torch.cat(xs)[:256]
    with torch.no_grad():
        x_hat_ref_NLD = sae(x_NLD * s_L[:, None])[0] / s_L[:, None]
        for j, layer in enumerate(layers):
            folder = scaled_run / f"layer_{layer}"
            assert json.loads((folder / "cfg.json").read_text())["normalize_activations"] == "none"
            lens = sae_lens.SAE.load_from_disk(str(folder))
            x_ND = x_NLD[:, j]
            f_ours = load(folder)(x_ND[:, None])[1][:, 0]
            torch.testing.assert_close(lens.encode(x_ND), f_ours, rtol=0, atol=1e-5)
            scale = x_hat_ref_NLD[:, j].abs().max().item()
            torch.testing.assert_close(lens(x_ND), x_hat_ref_NLD[:, j], rtol=0, atol=1e-5 * scale)
