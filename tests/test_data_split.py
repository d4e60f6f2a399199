"""The shipped SAE data (nsae/assets/kjv): the whole corpus, eval and validation each every
tenth chapter, no evaluation or validation context anywhere in train (nor one in the other),
every split spanning Genesis to Revelation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from nsae.config import asset
from tests.conftest import import_script

T = 128  # conf/data/kjv.yaml's context_size


def split_lines(split: str) -> list[str]:
    return Path(asset(f"kjv/{split}.txt")).read_text().splitlines()


def token_stream(lines: list[str]) -> np.ndarray:
    """The packed stream: every verse's tokens followed by EOS (as packed_contexts does)."""
    tok = AutoTokenizer.from_pretrained(asset("kjv-gpt2"))
    ids: list[int] = []
    for enc in tok(lines)["input_ids"]:
        ids += [*enc, tok.eos_token_id]
    return np.asarray(ids, dtype=np.int32)


def windows(ids: np.ndarray, n: int, stride: int = 1) -> list[int]:
    return [hash(ids[i : i + n].tobytes()) for i in range(0, len(ids) - n + 1, stride)]


@pytest.mark.parametrize(
    ("held_split", "other_split"),
    [("eval", "train"), ("validation", "train"), ("eval", "validation")],
)
def test_no_held_out_context_occurs_in_another_split(held_split: str, other_split: str) -> None:
    other, held = token_stream(split_lines(other_split)), token_stream(split_lines(held_split))
    assert len(held) > 80_000  # a tenth of the corpus
    assert other_split != "train" or len(other) > 800_000  # the whole corpus, 8:1:1
    body = T - 1  # a context is BOS + 127 packed tokens
    other_windows = set(windows(other, body))  # at every offset, not just context starts
    held_contexts = windows(held, body, stride=body)
    assert len(held_contexts) > 600
    assert not any(h in other_windows for h in held_contexts)
    # Shorter runs are shared only by the corpus' parallel passages (e.g. Psalm 14 / 53).
    other32 = set(windows(other, 32))
    shared = np.mean([h in other32 for h in windows(held, 32)])
    assert shared < 0.005


def test_both_splits_span_the_corpus_in_order() -> None:
    train, held = split_lines("train"), split_lines("eval")
    first_eval = "Now these are the generations of the sons of Noah"  # Genesis 10:1
    wonder = "And there appeared a great wonder in heaven; a woman clothed with the sun"
    assert held[0].startswith(first_eval)
    assert any(v.startswith(wonder) for v in held)  # Revelation 12:1
    assert held[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."  # Rev 22:21
    assert train[0] == "In the beginning God created the heaven and the earth."
    assert train[-1].startswith("And there shall in no wise enter into it")  # Rev 21:27
    assert not set(held) & {train[0], train[-1]}
    assert len(train) > 8 * len(held) * 0.9
    validation = split_lines("validation")
    assert validation[0].startswith("This is the book of the generations of Adam")  # Gen 5:1
    assert validation[-1].startswith("And the woman which thou sawest is that great city")
    assert not set(validation) & {held[0], train[0], train[-1]}


def test_split_rule_every_tenth_chapter() -> None:
    make = import_script("make_sae_data")
    chapters = [[f"c{i} v{j}" for j in range(2)] for i in range(25)]
    chapters[3].append("Samuel 2")  # a numbered book's heading, parsed as a verse
    splits = make.sae_split(chapters)
    assert splits["eval"] == ["c9 v0", "c9 v1", "c19 v0", "c19 v1"]
    assert splits["validation"] == ["c4 v0", "c4 v1", "c14 v0", "c14 v1", "c24 v0", "c24 v1"]
    kept = [i for i in range(25) if i % 10 not in (4, 9)]
    assert splits["train"] == [f"c{i} v{j}" for i in kept for j in range(2)]


@pytest.mark.skipif(shutil.which("bible") is None, reason="needs Debian's bible-kjv")
def test_shipped_files_are_the_script_output_and_unseen_by_the_lm(tmp_path: Path) -> None:
    make, source = import_script("make_sae_data"), import_script("train_source_model")
    chapters = source.read_kjv_chapters()
    make.write_sae_data(chapters, tmp_path)
    for split in ("train", "validation", "eval"):
        assert (tmp_path / f"{split}.txt").read_bytes() == Path(
            asset(f"kjv/{split}.txt")
        ).read_bytes()
    _, lm_heldout = source.split_chapters(chapters)  # what the LM never trained on
    held = set(lm_heldout)
    assert all(v in held for v in split_lines("eval") + split_lines("validation"))
