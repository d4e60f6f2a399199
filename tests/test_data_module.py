"""The datamodule on the real embedded model and real text files: the activation cache's
key (token count, data contents), the norm sample from the train split, eval overlap."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer

from nsae.config import asset
from nsae.data.activations import eval_positions
from nsae.data.datamodule import ActivationDataModule
from nsae.data.source import Harvester, load_source
from nsae.errors import NsaeError
from nsae.evaluation import zero_ablation

LAYERS = [1, 3]
T = 32


def write_text(tmp_path: Path, n_train: int = 300, n_eval: int = 100) -> dict[str, str]:
    """Real verses from the shipped splits, written to tmp files."""
    files = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        lines = Path(asset(f"kjv/{split}.txt")).read_text().splitlines()[:n]
        files[split] = str(tmp_path / f"{split}.txt")
        Path(files[split]).write_text("\n".join(lines) + "\n")
    return files


def data_cfg(tmp_path: Path, **over: object) -> DictConfig:
    files = write_text(tmp_path) if not (tmp_path / "train.txt").exists() else None
    files = files or {s: str(tmp_path / f"{s}.txt") for s in ("train", "eval")}
    base = {
        "path": "text",
        "name": None,
        "data_files": files,
        "streaming": False,
        "train_split": "train",
        "eval_split": "eval",
        "allow_eval_overlap": False,
        "text_column": "text",
        "context_size": T,
        "exclude_special_tokens": False,
        "harvest_batch": 4,
        "batch_size": 64,
        "buffer_tokens": 512,
        "num_workers": 0,
        "n_eval_tokens": 256,
        "n_norm_tokens": 200,
        "cache": True,
        "cache_dir": str(tmp_path / "cache"),
        "cache_tokens": 2048,
        "cache_dtype": "float32",
    }
    return OmegaConf.create({**base, **over})


SOURCE = OmegaConf.create(
    {"name": asset("kjv-gpt2"), "dtype": "float32", "autocast": None, "hook_site": "resid_post"}
)


def make_dm(
    data: DictConfig, layers: list[int] = LAYERS, seed: int = 0, extras: Any = zero_ablation
) -> ActivationDataModule:
    """A set-up datamodule, with the evaluation's fixed extras as a job has them."""
    dm = ActivationDataModule(data, SOURCE, layers, seed, fixed_extras=extras)
    dm.setup("fit")
    return dm


def reference_contexts(path: str, n: int) -> torch.Tensor:
    """n packed contexts of a text file, packed here by hand (BOS, then T - 1 tokens of the
    verses joined by EOS) and evenly spaced through the file: context i * total // n."""
    tok = AutoTokenizer.from_pretrained(asset("kjv-gpt2"))
    stream: list[int] = []
    for line in Path(path).read_text().splitlines():
        stream += tok(line)["input_ids"] + [tok.eos_token_id]
    body = T - 1
    total = len(stream) // body
    picked = [i * total // n for i in range(n)]
    return torch.tensor([[tok.bos_token_id, *stream[i * body : (i + 1) * body]] for i in picked])


def entries(data: DictConfig) -> list[Path]:
    return sorted(p for p in Path(data.cache_dir).iterdir() if (p / "meta.json").is_file())


def test_cache_key_covers_token_count_and_file_contents(tmp_path: Path) -> None:
    data = data_cfg(tmp_path)
    assert make_dm(data).built["activation_cache"] is True
    again = make_dm(data)
    assert (
        again.built["activation_cache"] is False and len(entries(data)) == 1
    )  # identical: one entry
    assert make_dm(data_cfg(tmp_path, cache_tokens=1024)).built["activation_cache"]
    assert len(entries(data)) == 2  # differ only in cache_tokens: two entries
    train = Path(data.data_files.train)
    lines = train.read_text().splitlines()
    train.write_text("\n".join(reversed(lines)) + "\n")  # same path, same size, new contents
    changed = make_dm(data)
    assert changed.built["activation_cache"] is True and len(entries(data)) == 3
    meta = changed.acts.cache.meta
    assert meta["n_tokens"] == 2048 and meta["context_size"] == T
    assert meta["data"]["files"] == [hashlib.sha256(train.read_bytes()).hexdigest()]
    weights = Path(asset("kjv-gpt2")) / "model.safetensors"
    assert meta["model_files"]["files"]["model.safetensors"] == (
        hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert set(meta["model_files"]["files"]) >= {"tokenizer.json", "tokenizer_config.json"}


def test_norm_sample_from_train_split_and_eval_from_eval_split(tmp_path: Path) -> None:
    data = data_cfg(tmp_path)
    dm = make_dm(data)
    model, _ = load_source(asset("kjv-gpt2"))
    harvester = Harvester(model, LAYERS, "resid_post")
    norm_ids = reference_contexts(data.data_files.train, 7)  # 200 tokens: 7 contexts
    x_NLD = harvester(norm_ids).flatten(0, 1)
    torch.testing.assert_close(dm.norm_sample, x_NLD[:200], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dm.norm_positions, torch.arange(T).repeat(64)[:200])
    assert dm.norm_stats["layer_3"]["position_0"]["n_tokens"] == 7  # 200 tokens: 7 contexts
    norms = x_NLD[:200, 1].double().norm(dim=-1)
    assert dm.norm_stats["layer_3"]["mean"] == pytest.approx(norms.mean().item(), rel=1e-5)
    torch.testing.assert_close(dm.eval_ids, reference_contexts(data.data_files.eval, 8))
    stored = np.load(dm.acts.cache.dir / "acts.npy")
    cached = harvester(reference_contexts(data.data_files.train, 64)).flatten(0, 1)
    np.testing.assert_allclose(stored, cached.numpy(), rtol=1e-5, atol=1e-5)


def test_eval_positions_skip_excluded_special_tokens(tmp_path: Path) -> None:
    dm = make_dm(data_cfg(tmp_path, exclude_special_tokens=True, cache=False))
    ids_BT = dm.eval_ids[:3]
    x_NLD, keep_BT = dm.acts.harvest(ids_BT)
    pos_N = eval_positions(keep_BT)
    bos_eos = {dm.acts.tokenizer.bos_token_id, dm.acts.tokenizer.eos_token_id}
    want = [t for row in ids_BT.tolist() for t, tok in enumerate(row) if tok not in bos_eos]
    assert pos_N.tolist() == want and len(pos_N) == len(x_NLD)
    assert 0 not in want and dm.norm_stats["layer_1"]["position_0"]["n_tokens"] == 0


def test_eval_split_overlapping_train_is_refused(tmp_path: Path) -> None:
    data = data_cfg(tmp_path, cache=False)
    with pytest.raises(NsaeError, match=r"data\.eval_split='train' overlaps .*\(the same split\)"):
        make_dm(data_cfg(tmp_path, eval_split="train", cache=False))
    copy = tmp_path / "eval_copy.txt"
    shutil.copy(data.data_files.train, copy)
    same = data_cfg(tmp_path, cache=False, data_files={**data.data_files, "eval": str(copy)})
    with pytest.raises(NsaeError, match=r"has the contents of a train file\).*allow_eval_overlap"):
        make_dm(same)
    same.allow_eval_overlap = True
    torch.testing.assert_close(make_dm(same).eval_ids, reference_contexts(str(copy), 8))


def test_single_layer(tmp_path: Path) -> None:
    dm = make_dm(data_cfg(tmp_path), layers=[2])
    assert dm.norm_sample.shape == (200, 1, 128) and list(dm.norm_stats) == ["layer_2"]
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (64, 1, 128)
