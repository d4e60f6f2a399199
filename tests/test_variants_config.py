"""Each variant's YAML builds its class; coefficient defaults cover every variant and follow
the beta rule; meaningless combinations are refused with one line."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nsae.config import CONF_DIR, group_options
from nsae.constants import SAE_COMMON_KEYS as COMMON  # sae.* keys the training loop keeps
from nsae.loss import NORM_POWER, beta_exponent
from nsae.saes import ALIASES, SAE, build_sae, check_combination

SAE_TYPES = sorted(SAE.registry)


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_every_variant_has_one_yaml_and_every_yaml_one_variant() -> None:
    assert group_options("sae_type") == sorted(SAE_TYPES + list(ALIASES))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_an_alias_composes_exactly_its_types_config(alias: str) -> None:
    """sae_type=relu is sae_type=none: the same composed config, so the same run."""
    assert compose_cfg(f"sae_type={alias}") == compose_cfg(f"sae_type={ALIASES[alias]}")
    assert compose_cfg(f"sae_type={alias}") != compose_cfg("sae_type=normalized_sae")


@pytest.mark.parametrize("sae_type", SAE_TYPES)
def test_yaml_builds_the_variant(sae_type: str) -> None:
    cfg = compose_cfg(f"sae_type={sae_type}")
    kwargs = {
        k: v for k, v in OmegaConf.to_container(cfg.sae, resolve=True).items() if k not in COMMON
    }
    sae = build_sae(sae_type, 2, 128, 128 * cfg.sae.expansion_factor, **kwargs)
    assert sae.name == sae_type
    out = sae.train_forward(torch.randn(16, 2, 128))
    assert out.x_hat_BLD.shape == (16, 2, 128)


@pytest.mark.parametrize("sae_type", SAE_TYPES)
def test_coefficient_defaults_follow_the_beta_rule(sae_type: str) -> None:
    """beta default = alpha default / 18^k, and EXACTLY the alpha default where k = 0."""
    alpha = OmegaConf.to_container(compose_cfg("coeff=alpha").coeff.default_alpha)[sae_type]
    beta = OmegaConf.to_container(compose_cfg("coeff=beta").coeff.default_alpha)[sae_type]
    cfg = compose_cfg(f"sae_type={sae_type}")
    kwargs = {
        k: v for k, v in OmegaConf.to_container(cfg.sae, resolve=True).items() if k not in COMMON
    }
    sae = build_sae(sae_type, 1, 128, 1024, **kwargs)
    assert set(alpha) == set(beta) == set(NORM_POWER)
    for method, p in NORM_POWER.items():
        k = beta_exponent(p, sae.sparsity_scaling)
        assert sae.sparsity_scaling == SAE.registry[sae_type].sparsity_scaling_for(
            cfg.sae.get("l1_weighting")
        )
        if k == 0 or not sae.uses_sparsity_coeff:
            assert beta[method] == alpha[method]
        else:
            assert beta[method] == pytest.approx(alpha[method] / 18.0**k, rel=0.1)
        assert (alpha[method] > 0) == sae.uses_sparsity_coeff


@pytest.mark.parametrize("sae_type", SAE_TYPES)
@pytest.mark.parametrize("method", list(NORM_POWER))
def test_combinations(sae_type: str, method: str) -> None:
    check_combination(sae_type, method, "alpha")
    if SAE.registry[sae_type].uses_sparsity_coeff:
        check_combination(sae_type, method, "beta")
    else:
        with pytest.raises(ValueError, match=f"^coeff=beta on sae_type={sae_type}: it has no"):
            check_combination(sae_type, method, "beta")


def test_bad_names_are_refused_with_the_options() -> None:
    with pytest.raises(ValueError, match=re.escape("sae_type='foo'; valid: batchtopk, gated")):
        check_combination("foo", "none", "alpha")
    with pytest.raises(ValueError, match=re.escape("coeff='gamma'; valid: alpha, beta")):
        check_combination("none", "none", "gamma")
    with pytest.raises(ValueError, match="normalization_method='l3' does not apply"):
        check_combination("topk", "l3", "alpha")
