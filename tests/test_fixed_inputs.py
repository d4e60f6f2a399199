"""The fixed inputs a sweep's jobs share (`nsae.data.acts.fixed`): stored once per key, equal to
what a job computes alone, keyed by contents, never rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nsae.evaluation import zero_terms
from nsae.metrics.splice import clean_log_probs, token_terms
from tests.test_data_module import data_cfg, make_dm, write_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_stored_inputs_equal_what_a_job_computes_alone(tmp_path: Path) -> None:
    stored = make_dm(data_cfg(tmp_path, cache=False))
    alone = make_dm(data_cfg(tmp_path, cache=False, reuse_fixed_inputs=False))
    assert stored.acts.fixed is not None and stored.acts.fixed.built and alone.acts.stored is None
    torch.testing.assert_close(stored.norm_sample, alone.norm_sample, rtol=0, atol=0)
    assert torch.equal(stored.norm_positions, alone.norm_positions)
    assert torch.equal(stored.eval_ids, alone.eval_ids)
    assert stored.norm_stats == alone.norm_stats
    index_B = torch.tensor([0, 2, 5])
    ids_BT, x_NLD, keep_BT = stored.acts.eval_batch(index_B)
    ids2, x2, keep2 = alone.acts.eval_batch(index_B)
    assert torch.equal(ids_BT, ids2) and torch.equal(keep_BT, keep2)
    torch.testing.assert_close(x_NLD, x2, rtol=1e-6, atol=1e-6)
    # the zero ablation of layer j, against a forward with layer j zeroed, computed here
    lm = alone.acts.harvester
    logp_clean = clean_log_probs(lm.logits(ids_BT))
    for j in range(2):
        kl_BT, ce_BT = zero_terms(stored.acts, index_B, ids_BT, j, logp_clean)
        logp_zero = torch.log_softmax(lm.logits(ids_BT, j, torch.zeros_like).float(), -1)
        kl_ref = (logp_clean.exp() * (logp_clean - logp_zero)).sum(-1)
        ce_ref = -logp_zero[:, :-1].gather(-1, ids_BT[:, 1:, None]).squeeze(-1)
        torch.testing.assert_close(kl_BT, kl_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ce_BT, ce_ref, rtol=1e-5, atol=1e-6)
        alone_terms = zero_terms(alone.acts, index_B, ids_BT, j, logp_clean)
        torch.testing.assert_close(alone_terms, (kl_ref, ce_ref))
    assert token_terms(logp_clean, lm.logits(ids_BT), ids_BT)[0].abs().max() < 1e-5  # KL(P||P)


def test_one_entry_per_key_read_by_every_job_and_never_rewritten(tmp_path: Path) -> None:
    data = data_cfg(tmp_path, cache=False)
    first = make_dm(data)
    entry = first.acts.fixed.path
    assert oct(entry.stat().st_mode & 0o777) == "0o444"
    mtime = entry.stat().st_mtime_ns
    again = make_dm(data)
    assert again.acts.fixed.key == first.acts.fixed.key and not again.acts.fixed.built
    assert entry.stat().st_mtime_ns == mtime
    meta = json.loads(entry.with_suffix(".json").read_text())
    assert meta["key"] == first.acts.fixed.key and meta["n_norm_tokens"] == 200
    # what changes the numbers changes the key: token counts, the LM batch, layers, the text
    assert make_dm(data_cfg(tmp_path, cache=False, n_eval_tokens=128)).acts.fixed.built
    assert make_dm(data_cfg(tmp_path, cache=False, harvest_batch=2)).acts.fixed.built
    assert make_dm(data, layers=[2]).acts.fixed.built
    # an entry stored without the evaluation's terms is another entry
    assert make_dm(data, extras=None).acts.fixed.built
    # a copy of the same text elsewhere (same contents, other paths) shares the entry
    moved = tmp_path / "moved"
    moved.mkdir()
    write_text(moved)
    assert (
        make_dm(data_cfg(moved, cache=False, cache_dir=data.cache_dir)).acts.fixed.key == entry.stem
    )
    text = Path(data.data_files.eval)
    text.write_text(text.read_text().replace("God", "Lord", 1))
    changed = make_dm(data)
    assert changed.acts.fixed.built and changed.acts.fixed.key != first.acts.fixed.key
    assert len(list((tmp_path / "cache" / "fixed").glob("*.pt"))) == 6


def flat_numbers(d: object, prefix: str = "") -> dict[str, float]:
    if isinstance(d, dict):
        return {
            k: v for key, sub in d.items() for k, v in flat_numbers(sub, f"{prefix}/{key}").items()
        }
    if isinstance(d, list):
        return {
            k: v for i, sub in enumerate(d) for k, v in flat_numbers(sub, f"{prefix}[{i}]").items()
        }
    return {prefix: float(d)} if isinstance(d, int | float) and not isinstance(d, bool) else {}


@pytest.mark.slow
def test_a_run_on_stored_inputs_reports_what_a_run_computing_them_reports(
    tmp_path: Path, cli
) -> None:
    """Every number in metrics.json (splice metrics included) of a job that builds the
    fixed inputs, of one that reads them, and of one that computes them itself."""
    common = ["debug=tiny", "logger=none", f"data.cache_dir={tmp_path}/cache"]
    for name, extra in (("built", []), ("read", []), ("alone", ["data.reuse_fixed_inputs=false"])):
        proc = cli(*common, *extra, f"hydra.run.dir={tmp_path}/{name}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {
        n: json.loads((tmp_path / n / "metrics.json").read_text())
        for n in ("built", "read", "alone")
    }
    assert runs["built"]["fixed_inputs"]["built_by_this_job"] is True
    assert runs["read"]["fixed_inputs"]["built_by_this_job"] is False
    assert runs["alone"]["fixed_inputs"] is None
    numbers = {n: flat_numbers(r) for n, r in runs.items()}
    assert "/metrics/kl_div_score/mean" in numbers["built"]
    for other in ("read", "alone"):
        keys = [k for k in numbers["built"] if "seconds" not in k and k in numbers[other]]
        assert len(keys) > 100
        for k in keys:
            assert numbers[other][k] == pytest.approx(numbers["built"][k], rel=1e-6, abs=1e-9), k
