"""Resampling dead features (nsae/resample.py): dead ones come back alive, live ones are
untouched, and the optimizer forgets the resampled entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nsae.resample import resample_dead
from nsae.saes import build_sae


@pytest.mark.parametrize("sae_type", ["none", "normalized_sae"])
def test_dead_features_come_back_and_live_ones_are_untouched(sae_type: str) -> None:
    torch.manual_seed(0)
    extra = {"noise_std": 0.0} if sae_type == "normalized_sae" else {}
    sae = build_sae(sae_type, 2, 8, 16, **extra)
    dead_LM = torch.zeros(2, 16, dtype=torch.bool)
    dead_LM[0, [1, 5]] = True
    dead_LM[1, [0, 2, 3]] = True
    with torch.no_grad():  # dead by construction: a very negative encoder bias
        sae.b_enc_LM[dead_LM] = -1e4
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x_BLD = torch.randn(64, 2, 8)
    sae.train_forward(x_BLD).x_hat_BLD.pow(2).sum().backward()
    opt.step()  # Adam now has state everywhere
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    assert not (sae(x_BLD)[1] > 0).any(0)[dead_LM].any()

    counts = resample_dead(sae, opt, x_BLD, dead_LM)

    assert counts == [2, 3]
    fired_LM = (sae(x_BLD)[1] > 0).any(0)
    assert fired_LM[dead_LM].all(), "every resampled feature fires again"
    live = ~dead_LM
    assert torch.equal(sae.W_dec_LMD[live], before["W_dec_LMD"][live])
    assert torch.equal(sae.b_enc_LM[live], before["b_enc_LM"][live])
    assert torch.equal(
        sae.W_enc_LDM.transpose(1, 2)[live], before["W_enc_LDM"].transpose(1, 2)[live]
    )
    assert torch.equal(sae.b_dec_LD, before["b_dec_LD"])
    # a resampled decoder row is a unit direction of (x - b_dec) for some input token
    rows = sae.W_dec_LMD[0, [1, 5]]
    directions = x_BLD[:, 0] - sae.b_dec_LD[0]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    scale = before["W_dec_LMD"][0][live[0]].norm(dim=-1).mean()
    cos = (rows / rows.norm(dim=-1, keepdim=True)) @ directions.T
    assert (cos.max(dim=1).values > 1 - 1e-5).all()
    torch.testing.assert_close(rows.norm(dim=-1), scale.expand(2))
    for param in (sae.W_dec_LMD, sae.b_enc_LM):
        state = opt.state[param]
        assert (state["exp_avg"][dead_LM] == 0).all() and (state["exp_avg_sq"][dead_LM] == 0).all()
        assert (state["exp_avg_sq"][live] != 0).any()


@pytest.mark.slow
def test_a_run_with_resampling_logs_the_counts(cli, tmp_path: Path) -> None:
    import csv

    run_dir = tmp_path / "run"
    proc = cli(
        "debug=tiny",
        "source.layers=[0]",
        "sae.resample.every_steps=6",
        "metrics.splice=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        logged = [r["train/resampled/layer_0"] for r in csv.DictReader(fh)]
    counts = [float(v) for v in logged if v]
    assert len(counts) == 2 and all(c >= 0 for c in counts)  # steps 6 and 12
    refused = cli("sae_type=topk", "sae.resample.every_steps=6", f"hydra.run.dir={run_dir}2")
    assert refused.returncode == 2 and "the TopK family has AuxK" in refused.stderr
