"""nsae.features, fast: the streaming pass against a brute force over the same tokens, the
pairing against brute force over permutations, bad input as one line and exit 2."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nsae.features.build import LayerJob, Options, collect, layer_view, token_index
from nsae.features.collect import HIST_EDGES, FeatureStats, sample_key
from nsae.features.pairing import nearest_neighbours, pair
from nsae.features.runs import open_run, select_layers
from nsae.rundir import relocate
from nsae.saes import build_sae

ROOT = Path(__file__).resolve().parents[1]


def sparse_acts(C: int, T: int, F: int, seed: int = 0, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(C, T, F, generator=g) * 5
    f[torch.rand(C, T, F, generator=g) < 0.8] = 0
    f[:, :, 0] = 0  # a dead feature
    if ties:  # equal values: the earlier token must win
        f = (f * 2).round() / 2
    return f


def run_stats(f: torch.Tensor, ids: torch.Tensor, per_batch: int, **kw: int) -> FeatureStats:
    C, T, F = f.shape
    stats = FeatureStats(F, **kw)
    for c0 in range(0, C, per_batch):
        stats.update(f[c0 : c0 + per_batch], ids[c0 : c0 + per_batch], c0 * T)
    return stats


@pytest.mark.parametrize("per_batch", [1, 3, 16])
@pytest.mark.parametrize("ties", [False, True])
def test_stats_equal_brute_force(per_batch: int, ties: bool) -> None:
    C, T, F, k, S, before, after = 16, 12, 9, 4, 5, 3, 2
    f = sparse_acts(C, T, F, ties=ties)
    ids = torch.randint(0, 100, (C, T), generator=torch.Generator().manual_seed(1))
    stats = run_stats(f, ids, per_batch, k=k, n_samples=S, before=before, after=after)
    flat = f.reshape(-1, F)
    N = C * T
    assert stats.n_tokens == N
    assert torch.equal(stats.count_F, (flat > 0).sum(0))
    torch.testing.assert_close(stats.density(), (flat > 0).double().mean(0))
    torch.testing.assert_close(stats.mean(), flat.double().sum(0) / N)
    assert torch.equal(stats.max_F, flat.max(0).values)
    edges = HIST_EDGES.numpy()
    for j in range(F):
        fired = torch.nonzero(flat[:, j] > 0)[:, 0].tolist()
        vals = flat[:, j].tolist()
        # histogram: numpy's searchsorted on the same edges
        want = np.bincount(
            np.searchsorted(edges, np.array(vals)[fired], side="right"), minlength=len(edges) + 1
        )
        assert np.array_equal(stats.hist_FH[j].numpy(), want)
        # top-k: largest value first, the earlier token on ties
        want_top = sorted(fired, key=lambda n, v=vals: (-v[n], n))[:k]
        got = [t for t in stats.top.token[j].tolist() if t >= 0]
        assert got == want_top
        assert stats.top.value[j, : len(got)].tolist() == [vals[n] for n in want_top]
        # samples: the smallest keys
        keys = sample_key(torch.tensor(fired, dtype=torch.long), torch.full((len(fired),), j))
        want_smp = [n for _, n in sorted(zip(keys.tolist(), fired, strict=True))][:S]
        got = [t for t in stats.samples.token[j].tolist() if t >= 0]
        assert got == want_smp
        # windows: ids and activations around the token, within its context
        for kept in (stats.top, stats.samples):
            for r, n in enumerate(kept.token[j].tolist()):
                if n < 0:
                    continue
                c, t = divmod(n, T)
                for w, pos in enumerate(range(t - before, t + after + 1)):
                    inside = 0 <= pos < T
                    assert bool(kept.window_ok[j, r, w]) == inside
                    if inside:
                        assert kept.window_ids[j, r, w] == ids[c, pos]
                        assert kept.window_acts[j, r, w] == f[c, pos, j]
    assert (stats.top.token[0] == -1).all()  # the dead feature kept nothing


def test_keep_mask_counts_only_kept_positions() -> None:
    f = sparse_acts(4, 6, 5)
    keep = torch.ones(4, 6, dtype=torch.bool)
    keep[:, 0] = False
    stats = FeatureStats(5, k=3, n_samples=3, before=1, after=1)
    stats.update(f, torch.zeros(4, 6, dtype=torch.long), 0, keep)
    assert stats.n_tokens == 20
    assert torch.equal(stats.count_F, (f[:, 1:] > 0).reshape(-1, 5).sum(0))


def test_collect_over_a_stream_equals_one_encode() -> None:
    """`collect` (batches, encode chunks) gives the statistics of the whole set at once."""

    class Stream:
        context_size, total, T = 8, 10 * 8, 8

        def batches(self, per_batch: int):
            from nsae.features.stream import Batch

            g = torch.Generator().manual_seed(3)
            x = torch.randn(10, 8, 1, 6, generator=g)
            ids = torch.arange(80).view(10, 8)
            for c0 in range(0, 10, 3):
                yield Batch(ids[c0 : c0 + 3], x[c0 : c0 + 3], None)

    import nsae.features.build as build

    for sae_type, kw in (("none", {}), ("topk", {"k": 3}), ("normalized_sae", {"noise_std": 0.0})):
        sae = build_sae(sae_type, 1, 6, 12, **kw).eval()
        stream = Stream()
        build.LMStream = Stream  # collect reads the context size of an LM stream
        job = LayerJob("a", 0, 0, sae)
        collect(stream, [job], Options(k=3, n_samples=4, before=2, after=1))  # type: ignore[arg-type]
        x = torch.cat([b.x_CTLD for b in stream.batches(3)])
        with torch.no_grad():
            f = sae.encode(x.reshape(-1, 1, 6))[:, 0].view(10, 8, 12)
        ref = run_stats(f, torch.arange(80).view(10, 8), 10, k=3, n_samples=4, before=2, after=1)
        assert torch.equal(job.stats.count_F, ref.count_F)
        assert torch.equal(job.stats.hist_FH, ref.hist_FH)
        assert torch.equal(job.stats.top.token, ref.top.token)
        view = layer_view(job, Options(k=3, n_samples=4), None, None)
        assert len(view["top"]) == 12 and view["n_tokens"] == 80
        json.dumps(view)
        index = token_index(view, [str(i) for i in range(80)])
        for text, feats in index.items():
            for j, n in feats:
                assert sum(str(e[2][e[4]]) == text for e in view["top"][j]) == n


def brute_pairing(cos: np.ndarray) -> float:
    n = cos.shape[0]
    return max(sum(cos[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("seed", range(5))
def test_pairing_is_optimal(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 2 + seed % 5
    a, b = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    p = pair(a, b, threshold=0.5)
    rows, cols, cos = p.pairs()
    assert sorted(cols.tolist()) == list(range(n))
    want = brute_pairing(
        (
            torch.nn.functional.normalize(a.double(), dim=1)
            @ torch.nn.functional.normalize(b.double(), dim=1).T
        ).numpy()
    )
    assert cos.sum() == pytest.approx(want, abs=1e-12)
    assert set(p.unmatched_a().tolist()) == {int(i) for i in rows[cos < 0.5]}


def test_pairing_rectangular_leaves_extra_features_unmatched() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, generator=g)
    b = torch.cat([a[[2, 0]] * 2.0, torch.randn(2, 5, generator=g)])
    p = pair(a, b)
    assert p.partner_a[0] == 1 and p.partner_a[2] == 0
    assert np.isclose(p.cos_a[0], 1) and np.isclose(p.cos_a[2], 1)
    assert (p.partner_b == -1).sum() == 1
    assert len(p.unmatched_b()) >= 1


def test_self_pairing_is_identity_at_cosine_one() -> None:
    W = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    p = pair(W, W)
    assert np.array_equal(p.partner_a, np.arange(40))
    np.testing.assert_allclose(p.cos_a, 1.0)
    assert len(p.unmatched_a()) == 0 and len(p.unmatched_b()) == 0


def test_nearest_neighbours_equal_brute_force() -> None:
    W = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    ids, cos = nearest_neighbours(W, k=3, chunk=7)
    U = torch.nn.functional.normalize(W, dim=1)
    full = U @ U.T
    full.fill_diagonal_(-2)
    want = full.topk(3, dim=1)
    assert torch.equal(ids, want.indices)
    torch.testing.assert_close(cos, want.values)


def test_relocate_maps_another_checkouts_assets() -> None:
    from nsae.constants import ASSETS

    assert relocate("/elsewhere/nsae/assets/kjv/eval.txt") == str(ASSETS / "kjv/eval.txt")
    assert relocate({"a": ["embedded:kjv-gpt2"]}) == {"a": [str(ASSETS / "kjv-gpt2")]}
    assert relocate("/not/assets/x") == "/not/assets/x"


def features_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nsae.features", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )


def fake_run(root: Path, layers: tuple[int, ...] = (0,), d_in: int = 8, model: str = "m") -> Path:
    from nsae.export import export_saes

    sae = build_sae("none", len(layers), d_in, 16)
    meta = {"model_name": model, "hook_site": "resid_post", "context_size": 8}
    export_saes(sae, list(layers), torch.full((len(layers), 16), 0.1), root, meta)
    return root


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = fake_run(tmp_path / "run", (0, 1))
    other = fake_run(tmp_path / "other", (1,), d_in=4)
    wrong_model = fake_run(tmp_path / "wrong", (0,), model="other-model")
    cases = [
        ([str(tmp_path / "missing")], "run directory not found"),
        ([str(tmp_path / "empty")], "no layer folders"),
        ([str(run), "--layers", "3"], "layer 3 is not in"),
        ([str(run), "--layers", "x"], "--layers"),
        ([str(run), "--layers", "1", "--compare", str(other)], "d_in"),
        ([str(run), "--layers", "0", "--compare", str(wrong_model)], "same source model"),
        ([str(run), "--layers", "0", "--compare", str(other)], "layer 0 is not in"),
        ([str(run), "--tokens", "0"], "--tokens"),
        ([str(run)], "not a local model"),
    ]
    for args, message in cases:
        proc = features_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("nsae: error: "), (args, proc.stderr)
        assert message in lines[0] and not lines[0].startswith('nsae: error: "'), lines[0]


def test_select_layers(tmp_path: Path) -> None:
    run = open_run(fake_run(tmp_path / "run", (0, 2)))
    assert select_layers(run, None) == [0, 2]
    assert select_layers(run, [2]) == [2]
    assert open_run(tmp_path / "run" / "layer_2").layers.keys() == {2}


VARIANTS = {
    "none": {"l1_weighting": "decoder_norm"},
    "normalized_sae": {"noise_std": 0.1},
    "topk": {"k": 5},
    "batchtopk": {"k": 5, "threshold_lr": 0.5},
    "matryoshka": {"k": 5, "threshold_lr": 0.5, "prefixes": [8, 16]},
    "jumprelu": {"init_threshold": 0.2},
    "gated": {},
}


@pytest.mark.parametrize("sae_type", list(VARIANTS))
def test_every_variant_loads_as_export_and_as_saelens_folder(sae_type: str, tmp_path: Path) -> None:
    """An nsae export of every variant, and the same folder without nsae's own cfg keys
    (as SAELens writes one), encode like the trained SAE."""
    from nsae.export import export_saes
    from nsae.features.runs import load_layer

    torch.manual_seed(0)
    sae = build_sae(sae_type, 1, 8, 32, **VARIANTS[sae_type])
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if not name.startswith("W_"):
                param.add_(0.1 * torch.randn_like(param))
        for _ in range(3):
            sae.train_forward(2 * torch.randn(64, 1, 8))
    meta = {"model_name": "m", "hook_site": "resid_post", "context_size": 8}
    export_saes(sae, [3], torch.rand(1, 32), tmp_path, meta)
    x = 2 * torch.randn(50, 1, 8)
    with torch.no_grad():
        want = sae.eval().encode(x)
        assert torch.equal(load_layer(open_run(tmp_path), 3).encode(x), want)
        cfg_path = tmp_path / "layer_3" / "cfg.json"
        cfg = json.loads(cfg_path.read_text())
        del cfg["nsae"]
        cfg_path.write_text(json.dumps(cfg))
        run = open_run(tmp_path / "layer_3")
        assert run.layers.keys() == {3} and run.hook_site == "resid_post"
        torch.testing.assert_close(load_layer(run, 3).encode(x), want)
