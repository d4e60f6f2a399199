"""Config composition (Hydra compose API) and the one-line errors for bad input."""

from __future__ import annotations

import itertools

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nsae.config import CONF_DIR, check_group_choices
from nsae.errors import NsaeError

SAE_TYPES = ("none", "normalized_sae")
NORMS = ("none", "input_norm", "input_norm_squared")
COEFFS = ("alpha", "beta")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("sae_type", "norm", "coeff"), list(itertools.product(SAE_TYPES, NORMS, COEFFS))
)
def test_all_twelve_conditions_compose(sae_type: str, norm: str, coeff: str) -> None:
    cfg = compose_cfg(f"sae_type={sae_type}", f"normalization_method={norm}", f"coeff={coeff}")
    assert cfg.sae.type == sae_type
    assert cfg.loss.normalization_method == norm
    assert cfg.coeff.mode == coeff
    table = OmegaConf.to_container(cfg.coeff.default_alpha)
    assert cfg.coeff.alpha == table[sae_type][norm] and cfg.coeff.alpha > 0
    assert ("noise_std" in cfg.sae) == (sae_type == "normalized_sae")


def test_alpha_override_wins() -> None:
    assert compose_cfg("coeff.alpha=0.123").coeff.alpha == 0.123


@pytest.mark.parametrize("preset", ["debug=tiny", "debug=fast", "experiment=nsae_grid"])
def test_presets_override_the_base_config_and_pass_validation(preset: str) -> None:
    """Presets come after config.yaml's own keys in the defaults list, so they win; and
    each preset composes into a config that passes validation against the model."""
    from nsae.config import validate

    cfg = compose_cfg(preset)
    if preset == "debug=tiny":
        assert cfg.metrics.train_every_n_steps == 2  # config.yaml says 5
    assert validate(cfg, n_layers=4, max_positions=128) == [0, 1, 2, 3]


def test_group_choice_check() -> None:
    check_group_choices(["sae_type=none,normalized_sae", "coeff=beta", "seed=3"])
    with pytest.raises(
        NsaeError,
        match=r"sae_type=foo is not an option; valid: none, "
        r"normalized_sae$",
    ):
        check_group_choices(["sae_type=none,foo"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sae_type=foo", "sae_type=foo is not an option; valid: none, normalized_sae"),
        (
            "normalization_method=l3",
            "normalization_method=l3 is not an option; valid: input_norm, input_norm_squared, none",
        ),
        ("coeff=gamma", "coeff=gamma is not an option; valid: alpha, beta"),
        ("source.layers=[7]", "source.layers contains 7, outside the model; valid: 0..3 or all"),
        ("coeff.alpha=-1", "coeff.alpha=-1 is negative; valid: >= 0"),
        ("sae.noise_std=-0.5", "sae.noise_std=-0.5 is negative; valid: >= 0"),
        (
            "data.data_files.train=/nonexistent/train.txt",
            "data file for split 'train' not found: /nonexistent/train.txt",
        ),
        (
            "metrics.train_every_n_steps=80",
            "metrics.train_every_n_steps=80 exceeds trainer.log_every_n_steps=50, so some "
            "logged windows would have no training metrics; valid: 1..50",
        ),
        (
            "data.context_size=4096",
            "data.context_size=4096 exceeds the model's maximum positions; valid: 1..128",
        ),
    ],
)
def test_bad_input_is_one_line(override: str, expected: str, tmp_path, cli) -> None:
    extra = ["sae_type=normalized_sae"] if "noise_std" in override else []
    proc = cli(override, *extra, f"hydra.run.dir={tmp_path}/run", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"nsae: error: {expected}"]
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training
