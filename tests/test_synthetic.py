"""The synthetic source (nsae.data.synthetic): the truth is exact, the premise is exactly a
rescale, the distributions match their configuration, and the streams are deterministic."""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nsae.config import CONF_DIR
from nsae.data.synthetic import SyntheticSource
from nsae.errors import NsaeError

pytest.importorskip("sae_lens")
from sae_lens.synthetic import SyntheticModel

N_TOKENS = 8192


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only slow them on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(**premise: Any) -> dict[str, Any]:
    """A small 3-layer synthetic source; `premise` overrides token_norm / layer_growth keys."""
    cfg = {
        "n_layers": 3,
        "chunk_tokens": 512,
        "layer_growth": 1.0,
        "token_norm": {"kind": "none"},
        "model": {
            "num_features": 64,
            "hidden_dim": 32,
            "firing_probability": {
                "generator_name": "zipfian",
                "exponent": 0.5,
                "max_prob": 0.4,
                "min_prob": 0.01,
            },
            "correlation": {"rank": 4, "correlation_scale": 0.1, "seed": None},
            "std_firing_magnitudes": 0.5,
            "mean_firing_magnitudes": 2.0,
            "bias": 0.5,
            "seed": 3,
        },
    }
    for key, value in premise.items():
        if key == "layer_growth":
            cfg["layer_growth"] = value
        else:
            cfg["token_norm"][key] = value
    return cfg


def source(layers: tuple[int, ...] = (0, 2), seed: int = 1, **premise: Any) -> SyntheticSource:
    return SyntheticSource(tiny_cfg(**premise), list(layers), seed, "cpu")


def token_keys(x_NLD: torch.Tensor, bias_LD: torch.Tensor) -> torch.Tensor:
    """One number per token that fired some feature (a token with none is the bias itself,
    the same in every stream): a random projection of the whole token."""
    w_LD = torch.randn(bias_LD.shape, generator=torch.Generator().manual_seed(0))
    fired_N = (x_NLD - bias_LD).abs().amax((1, 2)) > 0
    return (x_NLD[fired_N] * w_LD).sum((1, 2))


def phi_inv(q: float) -> float:
    return math.sqrt(2) * torch.erfinv(torch.tensor(2 * q - 1, dtype=torch.float64)).item()


# -- the truth and the premise ---------------------------------------------------------------
@pytest.mark.parametrize("scales_bias", [False, True])
def test_x_is_the_true_features_times_the_dictionary_plus_the_bias(scales_bias: bool) -> None:
    src = source(kind="mixture", sigma=0.5, outlier_frac=0.05, outlier_scale=30.0,
                 scales_bias=scales_bias, layer_growth=2.0)  # fmt: skip
    b = src.sample(1024, "train", 0)
    c_NL = b.s_N[:, None] * src.layer_scale_L if scales_bias else src.layer_scale_L.expand(1024, -1)
    for j, model in enumerate(src.models):
        expect = b.f_NLF[:, j] @ model.feature_dict.feature_vectors + c_NL[:, j, None] * (
            model.feature_dict.bias
        )
        torch.testing.assert_close(b.x_NLD[:, j], expect.detach(), rtol=1e-5, atol=1e-4)
    assert src.layer_scale_L.tolist() == [1.0, 4.0]  # growth ** layer, layers 0 and 2


def test_the_premise_is_exactly_a_rescale_of_the_flat_model() -> None:
    """Same seed, stream and index: the premise changes scales only, never which features
    fire; x_on - s_l b = s_t s_l (x_off - b) and f_on = s_t s_l f_off."""
    flat = source().sample(2048, "train", 5)
    on_src = source(kind="lognormal", sigma=0.7, layer_growth=3.0)
    on = on_src.sample(2048, "train", 5)
    s_NL = on.s_N[:, None] * torch.tensor([1.0, 9.0])
    torch.testing.assert_close(on.f_NLF, s_NL[..., None] * flat.f_NLF)
    bias_LD = on_src.bias_LD
    lhs = on.x_NLD - torch.tensor([1.0, 9.0])[:, None] * bias_LD
    torch.testing.assert_close(lhs, s_NL[..., None] * (flat.x_NLD - bias_LD), rtol=1e-4, atol=1e-3)
    ratio_L = on.x_NLD.norm(dim=-1).mean(0) / flat.x_NLD.norm(dim=-1).mean(0)
    assert ratio_L[1] / ratio_L[0] == pytest.approx(9.0, rel=0.05)  # 3^2 from layer 0 to 2


def test_firing_rates_match_the_configured_probabilities() -> None:
    src = source(layers=(1,))
    b = src.sample(N_TOKENS, "train", 0)
    rate_F = (b.f_NLF[:, 0] > 0).double().mean(0)
    p_F = src.models[0].activation_generator.firing_probabilities.double()
    z_F = (rate_F - p_F) / (p_F * (1 - p_F) / N_TOKENS).sqrt()
    assert z_F.abs().max() < 4.5, z_F.abs().max()  # 64 features: P(any |z| > 4.5) ~ 4e-4
    true_l0 = (b.f_NLF[:, 0] > 0).double().sum(-1).mean()
    assert true_l0 == pytest.approx(p_F.sum().item(), rel=0.05)


def test_lognormal_token_factors_have_the_configured_quantiles() -> None:
    """The empirical CDF of s_t at exp(sigma Phi^-1(q)) is q within 4 binomial sigmas."""
    sigma = 0.8
    s_N = source(kind="lognormal", sigma=sigma).sample(N_TOKENS, "train", 0).s_N
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        cdf = (s_N <= math.exp(sigma * phi_inv(q))).double().mean().item()
        assert abs(cdf - q) < 4 * math.sqrt(q * (1 - q) / N_TOKENS), (q, cdf)


def test_mixture_has_the_configured_outlier_fraction_and_scale() -> None:
    src = source(kind="mixture", sigma=0.0, outlier_frac=0.02, outlier_scale=30.0, scales_bias=True)
    b = src.sample(N_TOKENS, "train", 0)
    outlier_N = b.s_N > 1
    assert set(b.s_N.unique().tolist()) == {1.0, 30.0}
    frac = outlier_N.double().mean().item()
    assert abs(frac - 0.02) < 4 * math.sqrt(0.02 * 0.98 / N_TOKENS)
    flat = source().sample(N_TOKENS, "train", 0)  # with the bias scaled too, x = s_t x_flat
    torch.testing.assert_close(b.x_NLD, b.s_N[:, None, None] * flat.x_NLD, rtol=1e-5, atol=1e-4)


def test_tied_factors_follow_the_true_l0_with_the_same_marginal() -> None:
    kw = {"kind": "mixture", "sigma": 0.5, "outlier_frac": 0.01, "outlier_scale": 30.0}
    free = source(**kw).sample(4096, "train", 0)
    tied = source(tie_to_l0=True, **kw).sample(4096, "train", 0)
    torch.testing.assert_close(tied.s_N.sort().values, free.s_N.sort().values)
    l0_N = (tied.f_NLF > 0).sum((1, 2))
    s_N = tied.s_N
    order = l0_N.argsort(stable=True)
    l0_sorted, s_sorted = l0_N[order], s_N[order]
    later = l0_sorted[None, :] > l0_sorted[:, None]  # pairs with strictly more true features
    assert (s_sorted[None, :] >= s_sorted[:, None])[later].all()


# -- determinism and sharding --------------------------------------------------------------
def test_a_stream_is_reproducible_and_indices_differ() -> None:
    a, b = source(), source()
    x0 = a.sample(256, "train", 7).x_NLD
    torch.testing.assert_close(b.sample(256, "train", 7).x_NLD, x0, rtol=0, atol=0)
    assert not torch.equal(a.sample(256, "train", 8).x_NLD, x0)
    assert not torch.equal(source(seed=2).sample(256, "train", 7).x_NLD, x0)


def test_sampling_leaves_the_global_generator_alone() -> None:
    src = source()
    torch.manual_seed(123)
    expect = torch.rand(4)
    torch.manual_seed(123)
    src.sample(64, "train", 0)
    assert torch.equal(torch.rand(4), expect)


def test_two_shards_are_disjoint_and_together_the_one_shard_stream() -> None:
    """Rank r of w draws chunk k*w + r of the stream: rank 0 of 2 has the single stream's
    even chunks, rank 1 its odd ones; `skip` resumes exactly."""
    src = source()
    single = list(itertools.islice(src.train_chunks(128), 6))
    rank0 = list(itertools.islice(src.train_chunks(128, rank=0, world=2), 3))
    rank1 = list(itertools.islice(src.train_chunks(128, rank=1, world=2), 3))
    for k in range(3):
        assert torch.equal(rank0[k], single[2 * k]) and torch.equal(rank1[k], single[2 * k + 1])
    keys0, keys1 = (token_keys(torch.cat(r), src.bias_LD) for r in (rank0, rank1))
    assert len(keys0) > 300 and not torch.isin(keys0, keys1).any()
    resumed = next(src.train_chunks(128, rank=1, world=2, skip=2))
    assert torch.equal(resumed, rank1[2])


def test_norm_sample_and_eval_set_are_fixed_and_disjoint_from_training() -> None:
    src = source()
    norm = src.norm_sample(1000)  # two pieces of chunk_tokens=512
    assert norm.shape == (1000, 2, 32) and torch.equal(norm, source().norm_sample(1000))
    ev = src.eval_batches(1000, 256)  # ceil(1000/256) = 4 batches of 256
    assert [b.x_NLD.shape[0] for b in ev] == [256] * 4
    shards = [src.eval_indices(1000, 256, r, 3) for r in range(3)]
    assert sorted(itertools.chain(*shards)) == [0, 1, 2, 3] and shards[0] == [0, 3]
    train = next(src.train_chunks(512))
    parts = {"norm": norm, "eval": torch.cat([b.x_NLD for b in ev]), "train": train}
    keys = {name: token_keys(x, src.bias_LD) for name, x in parts.items()}
    for a, b in itertools.combinations(keys, 2):
        assert not torch.isin(keys[a], keys[b]).any(), (a, b)


# -- configuration, errors and persistence ---------------------------------------------------
def compose_source(name: str) -> Any:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"source={name}"]).source


def test_presets_compose_and_flat_is_synthetic_with_the_premise_off() -> None:
    on, flat = compose_source("synthetic"), compose_source("synthetic_flat")
    assert on.kind == flat.kind == "synthetic"
    assert (on.token_norm.kind, on.layer_growth) == ("mixture", 2.0)
    assert (flat.token_norm.kind, flat.layer_growth) == ("none", 1.0)
    assert OmegaConf.to_container(on.model) == OmegaConf.to_container(flat.model)
    src = SyntheticSource(on, [0, 3], 0, "cpu")
    assert (src.d_model, src.n_features_true) == (128, 1024)


def test_synthsaebench_16k_preset_is_the_published_configuration() -> None:
    """The published script (SAELens, SynthSAEBench-16k), compared field by field."""
    from sae_lens.synthetic import (
        FoldedNormalMagnitudeConfig,
        HierarchyConfig,
        LinearMagnitudeConfig,
        LowRankCorrelationConfig,
        OrthogonalizationConfig,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )

    published = SyntheticModelConfig(
        num_features=1024 * 16,
        hidden_dim=768,
        firing_probability=ZipfianFiringProbabilityConfig(
            max_prob=0.4, min_prob=5e-4, exponent=0.5
        ),
        hierarchy=HierarchyConfig(
            total_root_nodes=128,
            branching_factor=4,
            mutually_exclusive_portion=1.0,
            mutually_exclusive_min_depth=0,
            compensate_probabilities=True,
            scale_children_by_parent=True,
            max_depth=3,
        ),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        correlation=LowRankCorrelationConfig(correlation_scale=0.1, rank=25),
        orthogonalization=OrthogonalizationConfig(num_steps=100, lr=3e-4),
        bias=0.5,
        seed=42,
    )
    ours = SyntheticModelConfig.from_dict(
        OmegaConf.to_container(compose_source("synthsaebench_16k").model)
    )
    assert ours.to_dict() == published.to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "pareto"}, "source.token_norm.kind='pareto'; valid: none, lognormal, mixture"),
        ({"sigma": -1.0}, "valid: sigma >= 0"),
        ({"layer_growth": 0.0}, "source.layer_growth=0.0; valid: > 0"),
    ],
)
def test_bad_premise_settings_stop_with_one_line(change: dict, message: str) -> None:
    with pytest.raises(NsaeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SyntheticSource(tiny_cfg(**change), [0], 0, "cpu")


def test_layers_out_of_range_and_a_bad_model_stop_with_one_line() -> None:
    with pytest.raises(NsaeError, match=r"synthetic layers \[3\]; valid: 0..2"):
        SyntheticSource(tiny_cfg(), [3], 0, "cpu")
    cfg = copy.deepcopy(tiny_cfg())
    cfg["model"]["num_features"] = 0
    with pytest.raises(NsaeError, match=r"source\.model: num_features must be at least 1"):
        SyntheticSource(cfg, [0], 0, "cpu")


def test_without_sae_lens_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sae_lens.synthetic", None)  # import now fails
    with pytest.raises(
        NsaeError, match=r'needs sae_lens; install it: pip install -e "\.\[saelens\]"'
    ):
        SyntheticSource(tiny_cfg(), [0], 0, "cpu")


def test_save_writes_loadable_models_and_the_premise(tmp_path: Any) -> None:
    src = source(kind="lognormal", sigma=0.5, layer_growth=2.0)
    src.save(tmp_path / "synthetic")  # (a run directory's synthetic/)
    for j, layer in enumerate(src.layers):
        loaded = SyntheticModel.load_from_disk(tmp_path / "synthetic" / f"layer_{layer}")
        assert torch.equal(loaded.feature_dict.feature_vectors, src.dict_LFD[j])
        assert torch.equal(loaded.feature_dict.bias, src.bias_LD[j])
    premise = json.loads((tmp_path / "synthetic" / "premise.json").read_text())
    assert premise["layer_scale"] == {"layer_0": 1.0, "layer_2": 4.0}
    assert premise["token_norm"]["kind"] == "lognormal" and premise["stream_seed"] == 1
