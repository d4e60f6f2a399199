"""End to end: `python -m nsae.train` on the embedded model, as a user runs it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nsae
from nsae.config import asset

pytestmark = pytest.mark.slow
N_LAYERS = 4  # the embedded model
METRIC_KEYS = {
    "l0",
    "l1",
    "l1_l0_ratio",
    "mse",
    "fvu",
    "explained_variance",
    "cosine",
    "feature_suppression",
    "relative_reconstruction_bias",
    "reconstruction_score",
    "kl",
    "dead_fraction",
    "norm_l0_corr",
}


def train_losses(run_dir: Path, key: str = "train/loss") -> list[float]:
    with open(run_dir / "logs" / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


EVERY_S = 0.1  # console.progress_every_s in these runs (short: a fast machine trains 40
# steps in about a second, and lines come only once an interval has passed)
OUTPUT: dict[str, str] = {}  # each run's stdout (a pipe, not a terminal)


@pytest.fixture(scope="module", params=["none", "normalized_sae"])
def finished_run(request, tmp_path_factory) -> tuple[str, Path]:
    from tests.conftest import run_cli

    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    proc = run_cli(
        f"sae_type={request.param}",
        "debug=fast",
        f"console.progress_every_s={EVERY_S}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    OUTPUT[request.param] = proc.stdout
    return request.param, run_dir


def seconds(clock: str) -> int:
    h, m, s = map(int, clock.split(":"))
    return 3600 * h + 60 * m + s


def test_progress_lines_off_a_terminal_and_a_useful_last_word(finished_run) -> None:
    """stdout is a pipe: no bars, but a training line every EVERY_S seconds with step/total,
    rate, elapsed time, ETA, training L0 and explained variance; a line when training ends;
    then the run directory, the headline metrics of metrics.json and the debug note."""
    sae_type, run_dir = finished_run
    out = OUTPUT[sae_type]
    pattern = (
        r"^nsae: train: (\d+)/40 steps \(\d+%\)  [\d.]+ steps/s  elapsed (\d:\d\d:\d\d)  "
        r"ETA (\d:\d\d:\d\d)  [\d.]+[kMG]? tokens/s  l0=[\d.]+  explained_variance=-?[\d.]+$"
    )
    found = re.findall(pattern, out, re.M)
    assert found, out
    steps = [int(step) for step, _, _ in found]
    assert steps == sorted(steps) and all(0 < s <= 40 for s in steps)
    done = re.search(r"^nsae: train: done, 40 steps in (\d:\d\d:\d\d)$", out, re.M)
    assert done, out
    # one line per interval, not one per step: at most (training time / interval) + 1 lines
    assert len(found) <= (seconds(done.group(1)) + 1) / EVERY_S + 1
    assert "\r" not in out and "it/s]" not in out  # no progress bar
    summary = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    lines = out.splitlines()
    assert lines[-3] == f"run dir: {run_dir}"
    expected = "  ".join(
        f"{k}={summary[k]['mean']:.4g}"
        for k in ("l0", "explained_variance", "reconstruction_score", "kl")
    )
    assert lines[-2] == expected
    assert lines[-1] == "nsae: note: a debug preset's run: these numbers are for testing only"


def test_run_directory_contents(finished_run) -> None:
    _, run_dir = finished_run
    for name in ("config.yaml", "norm_stats.json", "metrics.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    for layer in range(N_LAYERS):
        for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
            assert (run_dir / f"layer_{layer}" / name).is_file()


def test_metrics_json_has_every_layer_and_mean(finished_run) -> None:
    sae_type, run_dir = finished_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["condition"]["sae_type"] == sae_type
    assert summary["layers"] == list(range(N_LAYERS))
    assert summary["steps"] == 40
    metrics = summary["metrics"]
    assert set(metrics) >= METRIC_KEYS
    for key in METRIC_KEYS:
        per_layer = [metrics[key][f"layer_{i}"] for i in range(N_LAYERS)]
        assert metrics[key]["mean"] == pytest.approx(sum(per_layer) / N_LAYERS)
    assert all(0 < metrics["l0"][f"layer_{i}"] < summary["n_features"] for i in range(N_LAYERS))
    assert set(summary["cross_layer"]) == {"l0_cv", "norm_l0_corr"}
    hist = summary["feature_density_histogram"]
    for i in range(N_LAYERS):
        h = hist[f"layer_{i}"]
        assert sum(h["counts"]) + h["never_fired"] == summary["n_features"]


def test_loss_fell(finished_run) -> None:
    """The loss fell, and its reconstruction part by 30%: in 40 steps the sparsity part may
    rise again as features grow (the Normalized SAE's L1 rebounds), so the total alone is a
    weak signal."""
    losses = train_losses(finished_run[1])
    assert len(losses) >= 3
    assert losses[-1] < losses[0]
    mse = train_losses(finished_run[1], "train/mse/mean")
    assert mse[-1] < 0.7 * mse[0]


def test_export_reloads_to_the_trained_weights(finished_run) -> None:
    _, run_dir = finished_run
    ckpt = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )["state_dict"]
    layer = 2
    weights = load_file(str(run_dir / f"layer_{layer}" / "sae_weights.safetensors"))
    torch.testing.assert_close(weights["W_enc"], ckpt["sae.W_enc_LDM"][layer])
    torch.testing.assert_close(weights["W_dec"], ckpt["sae.W_dec_LMD"][layer])
    sae = nsae.load(run_dir / f"layer_{layer}")
    assert not sae.training
    x = torch.randn(16, 1, sae.d_model)
    torch.testing.assert_close(sae(x)[0], sae(x)[0])  # deterministic: noise is off


def test_norm_stats_and_coefficients(finished_run) -> None:
    _, run_dir = finished_run
    stats = json.loads((run_dir / "norm_stats.json").read_text())
    for i in range(N_LAYERS):
        row = stats["layers"][f"layer_{i}"]
        assert row["q01"] <= row["q50"] <= row["q99"] and row["mean"] > 0
    alpha = json.loads((run_dir / "metrics.json").read_text())["condition"]["alpha"]
    coefficients = list(stats["coefficients"].values())
    assert len(coefficients) == N_LAYERS
    assert coefficients == [pytest.approx(alpha)] * N_LAYERS


def test_rerun_into_finished_dir_refuses_and_keeps_outputs(finished_run, cli) -> None:
    _, run_dir = finished_run
    before = (run_dir / "metrics.json").read_bytes()
    proc = cli("debug=fast", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("choose another hydra.run.dir")
    assert (run_dir / "metrics.json").read_bytes() == before


def test_embedded_assets_load_with_auto_classes() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(asset("kjv-gpt2"))
    tok = AutoTokenizer.from_pretrained(asset("kjv-gpt2"))
    assert model.config.model_type == "gpt2" and model.config.n_layer >= 4
    ids = tok("In the beginning God created the heaven", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    stats = json.loads(Path(asset("kjv-gpt2/training_stats.json")).read_text())
    assert stats["heldout_loss_nats"] < stats["unigram_entropy_nats"] - 1.0
    assert loss < stats["unigram_entropy_nats"]


def bank_from_checkpoint(run_dir: Path):
    """The trained SAE bank (all layers) rebuilt from last.ckpt, in eval mode."""
    from nsae.saes import build_sae

    state = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )["state_dict"]
    cfg = json.loads((run_dir / "layer_0" / "cfg.json").read_text())
    bank = build_sae(
        cfg["nsae"]["sae_type"], N_LAYERS, cfg["d_in"], cfg["d_sae"], **cfg["nsae"]["hparams"]
    )
    bank.load_state_dict({k.removeprefix("sae."): v for k, v in state.items() if k[:4] == "sae."})
    return bank.eval()


def test_export_round_trip_gives_identical_reconstructions(finished_run) -> None:
    _, run_dir = finished_run
    bank = bank_from_checkpoint(run_dir)
    x_BLD = 10 * torch.randn(64, N_LAYERS, bank.d_model)
    with torch.no_grad():
        x_hat_BLD, f_BLM = bank(x_BLD)
        for layer in range(N_LAYERS):
            x_hat, f = nsae.load(run_dir / f"layer_{layer}")(x_BLD[:, layer : layer + 1])
            # float32 rounding only: the bank's batched matmul over every layer and one
            # layer's matmul may run different kernels (values up to ~100 here)
            torch.testing.assert_close(x_hat[:, 0], x_hat_BLD[:, layer], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(f[:, 0], f_BLM[:, layer], rtol=1e-5, atol=1e-5)


def test_saelens_loads_the_export_with_the_same_reconstruction(finished_run) -> None:
    pytest.importorskip("sae_lens", reason="sae-lens is an optional extra: .[saelens]")
    import nsae.saelens

    sae_type, run_dir = finished_run
    folder = run_dir / "layer_1"
    lens = nsae.saelens.load(str(folder))
    expected = "standard" if sae_type == "none" else "normalized_sae"
    assert lens.cfg.architecture() == expected
    if sae_type == "none":  # SAELens' own class, no help from nsae
        from sae_lens import StandardSAE

        assert type(lens) is StandardSAE
    ours = nsae.load(folder)
    x_BD = 10 * torch.randn(64, ours.d_model)
    with torch.no_grad():
        x_hat_ours = ours(x_BD[:, None])[0][:, 0]
        torch.testing.assert_close(lens(x_BD), x_hat_ours, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            lens.encode(x_BD), ours(x_BD[:, None])[1][:, 0], rtol=0, atol=1e-6
        )


def test_export_refuses_a_folder_holding_another_export(finished_run, tmp_path) -> None:
    from nsae.errors import NsaeError
    from nsae.export import export_saes

    _, run_dir = finished_run
    bank = bank_from_checkpoint(run_dir)
    before = (run_dir / "layer_0" / "sae_weights.safetensors").read_bytes()
    density = torch.zeros(N_LAYERS, bank.n_features)
    meta = {"model_name": "m", "hook_site": "resid_post", "context_size": 8}
    with pytest.raises(NsaeError, match="already holds an export"):
        export_saes(bank, list(range(N_LAYERS)), density, run_dir, meta)
    assert (run_dir / "layer_0" / "sae_weights.safetensors").read_bytes() == before
    assert len(export_saes(bank, list(range(N_LAYERS)), density, tmp_path, meta)) == N_LAYERS


def test_training_metrics_are_logged_at_every_logging_step(finished_run) -> None:
    """debug=fast: 40 steps, logged every 10, metrics from every 5th batch (2 per window)."""
    with open(finished_run[1] / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/l0/layer_0")]
    assert [int(r["step"]) for r in rows] == [9, 19, 29, 39]
    for r in rows:
        l0 = [float(r[f"train/l0/layer_{i}"]) for i in range(N_LAYERS)]
        assert all(0 < v < 1024 for v in l0)
        assert float(r["train/l0/mean"]) == pytest.approx(sum(l0) / N_LAYERS, rel=1e-5)
        assert 0 <= float(r["train/dead_fraction/mean"]) <= 1
        assert float(r["train/fvu/mean"]) > 0


def test_provenance_names_model_and_data_as_the_user_named_them(finished_run) -> None:
    """Never a machine's absolute path: the embedded model and data by their names, with the
    nsae version and git commit, in metrics.json and in every exported cfg.json."""
    _, run_dir = finished_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    prov = summary["provenance"]
    assert prov["source"] == "embedded:kjv-gpt2" and prov["dataset"] == "embedded:kjv"
    assert prov["nsae_version"] == nsae.__version__
    assert prov["git_commit"] is None or len(prov["git_commit"].split("+")[0]) == 40
    assert prov["train_tokens"] == summary["steps"] * 256  # debug=fast batch size
    assert prov["epochs"] == pytest.approx(prov["train_tokens"] / prov["unique_train_tokens"])
    for layer in range(N_LAYERS):
        cfg = json.loads((run_dir / f"layer_{layer}" / "cfg.json").read_text())
        assert cfg["model_name"] == "embedded:kjv-gpt2" and cfg["dataset_path"] == "embedded:kjv"
        assert cfg["nsae"]["provenance"] == prov
    text = (run_dir / "metrics.json").read_text() + (run_dir / "layer_0" / "cfg.json").read_text()
    assert str(asset("")) not in text
    stats = json.loads((run_dir / "norm_stats.json").read_text())
    assert set(stats["layers"]) == {f"layer_{i}" for i in range(N_LAYERS)}
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {f"setup/coeff/layer_{i}" for i in range(N_LAYERS)} <= logged
    assert {f"setup/mean_norm/layer_{i}" for i in range(N_LAYERS)} <= logged
