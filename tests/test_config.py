"""Config composition (Hydra compose API) and the one-line errors for bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nsae.config import CONF_DIR, asset, check_group_choices
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


@pytest.mark.parametrize(
    "preset",
    ["debug=tiny", "debug=fast", "debug=study", "experiment=nsae_grid", "experiment=nsae_study"],
)
def test_presets_override_the_base_config_and_pass_validation(preset: str) -> None:
    """Presets come after config.yaml's own keys in the defaults list, so they win; and
    each preset composes into a config that passes validation against the model."""
    from nsae.checks import validate

    cfg = compose_cfg(preset)
    if preset == "debug=tiny":
        assert cfg.metrics.train_every_n_steps == 2  # config.yaml says 5
    assert validate(cfg) == ([1, 2] if preset == "debug=study" else [0, 1, 2, 3])


def test_group_choice_check() -> None:
    check_group_choices(["sae_type=none,normalized_sae", "coeff=beta", "seed=3"])
    with pytest.raises(NsaeError, match=r"sae_type=foo is not an option; valid: batchtopk, "):
        check_group_choices(["sae_type=none,foo"])


SAE_OPTIONS = "batchtopk, gated, jumprelu, matryoshka, none, normalized_sae, relu, topk"
LAYERS = "valid: integers in 0..3, a list of them, or all"


def files(tmp_path: Path) -> dict[str, Path]:
    """Bad data files and model directories, made for real."""
    from transformers import ViTConfig

    tmp_path.mkdir(parents=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 64)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((Path(asset("kjv-gpt2")) / "config.json").read_text())
    vit = tmp_path / "vit"
    ViTConfig(num_hidden_layers=2, hidden_size=32).save_pretrained(vit)
    (vit / "model.safetensors").write_bytes(b"x")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"empty": empty, "binary": binary, "no_weights": no_weights, "vit": vit, "file": a_file}


# (override with {placeholders} for the files above, the expected error after "nsae: error: ")
BAD_INPUTS = [
    # values: types, ranges, enums, combinations
    ("sae_type=foo", f"sae_type=foo is not an option; valid: {SAE_OPTIONS}"),
    (
        "normalization_method=l3",
        "normalization_method=l3 is not an option; valid: input_norm, input_norm_squared, none",
    ),
    ("coeff=gamma", "coeff=gamma is not an option; valid: alpha, beta"),
    ("source.layers=[7]", f"source.layers contains 7, outside the model; {LAYERS}"),
    ("source.layers=al", f"source.layers='al' is not a layer index; {LAYERS}"),
    ("coeff.alpha=-1", "coeff.alpha=-1 is out of range; valid: a number >= 0"),
    ("coeff.alpha=abc", "coeff.alpha='abc' is not a number; valid: a number >= 0"),
    ("optim.lr=abc", "optim.lr='abc' is not a number; valid: a number > 0"),
    ("optim.lr=0", "optim.lr=0 is out of range; valid: a number > 0"),
    ("sae.init_b_dec=median", "sae.init_b_dec='median'; valid: mean, geometric_median"),
    (
        "data.batch_size=40000",
        "data.buffer_tokens=65536 is less than 2 x data.batch_size=40000; "
        "valid: buffer_tokens >= 80000",
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
    (
        "sae_type=normalised",
        f"sae_type=normalised is not an option (did you mean "
        f"normalized_sae?); valid: {SAE_OPTIONS}",
    ),
    # Hydra's own errors, as one nsae line, with the nearest valid key
    (
        "optim.lrr=1",
        "optim.lrr is not a config key (did you mean optim.lr?); valid keys under optim: "
        "betas, decay, lr, min_lr_ratio, warmup_steps",
    ),
    (
        "sae_typ=none",
        "sae_typ is not a config key (did you mean sae_type?); valid keys at the top level: "
        "baseline, budget, coeff, console, data, debug, experiment, logger, loss, metrics, "
        "normalization_method, optim, resume, sae, sae_type, seed, source, trainer, tuned",
    ),
    ("+optim.lr=1", "+optim.lr: optim.lr is already in the config; set it without +: optim.lr=..."),
    # a key added with + that nsae never reads is refused (++ adds any key)
    (
        "+optim.lrr=1",
        "+optim.lrr: nsae never reads optim.lrr (did you mean optim.lr?); ++optim.lrr=... adds "
        "it anyway (for a key that your own config or a plugin reads)",
    ),
    (
        "+sae.kk=3",
        "+sae.kk: nsae never reads sae.kk (did you mean sae.k?); ++sae.kk=... adds it anyway "
        "(for a key that your own config or a plugin reads)",
    ),
    (
        "console.progress_every_s=0",
        "console.progress_every_s=0 is out of range; valid: a number > 0",
    ),
    # data
    (
        "data.data_files.train=/nonexistent/train.txt",
        "data file for split 'train' not found: /nonexistent/train.txt",
    ),
    (
        "data.data_files.train={empty}",
        "data file for split 'train' is empty: {empty}; valid: a file with text in it",
    ),
    (
        "data.data_files.eval={binary}",
        "data file for split 'eval' is not UTF-8 text: {binary} (byte 128); "
        "valid: a UTF-8 text file",
    ),
    (
        "data.data_files.train={tmp}",
        "data file for split 'train' is a directory, not a file: {tmp}; valid: a text file",
    ),
    # models
    (
        "source.name=/nonexistent/model",
        "source.name=/nonexistent/model: no such model directory; valid: a local Hugging "
        "Face model directory or a hub model name",
    ),
    (
        "source.name={no_weights}",
        "source.name={no_weights}: no weights in the model directory; valid: one of "
        "model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
        "pytorch_model.bin.index.json",
    ),
    (
        "source.name={vit}",
        "source.name={vit} is a 'vit' model, not a causal LM; valid: a model that "
        "AutoModelForCausalLM loads (GPT-2, GPT-NeoX, Llama, ...)",
    ),
    # paths
    (
        "hydra.run.dir={file}/run",
        "run directory {file}/run is under a file; choose another hydra.run.dir",
    ),
]


@pytest.mark.parametrize(("override", "expected"), BAD_INPUTS)
def test_bad_input_is_one_line(override: str, expected: str, tmp_path, cli) -> None:
    """Exit 2, exactly one `nsae: error:` line naming the value and what is valid, no
    traceback, and nothing written: no run directory, no cache entry."""
    made = {k: str(v) for k, v in files(tmp_path / "inputs").items()} | {"tmp": str(tmp_path)}
    override, expected = override.format(**made), expected.format(**made)
    run_dir = tmp_path / "out" / "run"
    args = (
        [override]
        if override.startswith("hydra.run.dir")
        else [override, f"hydra.run.dir={run_dir}"]
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli(*args, f"data.cache_dir={tmp_path / 'cache'}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"nsae: error: {expected}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run dir, no cache


@pytest.mark.parametrize(
    ("blocked", "args", "expected"),
    [
        (
            "sae_lens",
            ["source=synthetic", "debug=fast"],
            "source.kind=synthetic needs nsae's saelens extra (sae_lens is not installed): "
            'pip install -e ".[saelens]"',
        ),
        (
            "hydra_plugins.hydra_submitit_launcher",
            ["-m", "hydra/launcher=slurm", "seed=0,1"],
            "hydra/launcher=slurm needs nsae's slurm extra (hydra_plugins.hydra_submitit_launcher "
            'is not installed): pip install -e ".[slurm]"',
        ),
    ],
)
def test_a_missing_extra_is_named_before_anything_is_written(
    blocked: str, args: list[str], expected: str, tmp_path: Path
) -> None:
    """Without an optional extra (made unimportable here by a sitecustomize that blocks
    it), the command exits 2 with one line naming the extra and its install command, and
    writes nothing."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{blocked!r}] = None\n")
    out = tmp_path / "out"
    where = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "nsae.train", *args, f"{where}={out}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [f"nsae: error: {expected}"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_memory_and_accelerator_are_checked_before_anything_runs() -> None:
    """The SAE bank's memory is estimated against the device, and an accelerator the
    machine lacks is refused, both in one line with the numbers."""
    import torch

    from nsae.checks import check_accelerator, validate

    with pytest.raises(NsaeError, match=r"the SAE bank needs about .* GiB .* but the device has"):
        validate(compose_cfg("sae.expansion_factor=100000"))
    if not torch.cuda.is_available():
        with pytest.raises(NsaeError, match=r"accelerator=gpu but this machine has no GPU"):
            check_accelerator(OmegaConf.create({"accelerator": "gpu", "devices": 1}))
    with pytest.raises(NsaeError, match="valid: none, linear, cosine"):
        validate(compose_cfg("optim.decay=exp"))


def test_help_lists_every_group_and_its_options(cli) -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("nsae: train sparse autoencoders")
    for group in ("sae_type", "normalization_method", "coeff", "source", "data", "trainer"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in proc.stdout, group
    for key in ("seed = 0", "optim.lr = ", "trainer.max_steps = ", "README.md"):
        assert key in proc.stdout
