"""Write the default SAE data: the whole King James corpus, split by chapter.

    apt-get install -y bible-kjv
    python scripts/make_sae_data.py          # writes nsae/assets/kjv/{train,eval}.txt

The corpus is the one the embedded source model came from (`read_kjv_chapters` in
scripts/train_source_model.py). Chapter i (0-based, in corpus order Genesis 1 ..
Revelation 22, as that function numbers them) goes to eval if i % 10 == 9, else to train:
eval is every tenth chapter, interleaved over the whole book (so it has the register mix
of train), and, since
i % 10 == 9 implies i % 5 == 4, every eval chapter is one the LM never trained on. Both
files keep corpus order, one verse per line. The norm sample comes from train, so eval
shares no context with either train or the norm sample.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from train_source_model import ASSETS, read_kjv_chapters

EVAL_EVERY = 10  # chapter i is eval iff i % EVAL_EVERY == EVAL_EVERY - 1
# `read_kjv_chapters` takes the headings of numbered books ("1 Samuel 3") for verses
# ("Samuel 3"), so those chapters stay inside the previous chapter. Its chapter indices
# are the ones the LM's held-out split used, so they are kept as they are; only these
# heading lines are dropped from the SAE text.
_NUMBERED_BOOK_HEADING = re.compile(
    r"^(Samuel|Kings|Chronicles|Corinthians|Thessalonians|Timothy|Peter|John) \d+$"
)


def sae_split(chapters: list[list[str]]) -> tuple[list[str], list[str]]:
    """(train verses, eval verses): eval is every tenth chapter, both in corpus order."""
    train: list[str] = []
    held: list[str] = []
    for i, chapter in enumerate(chapters):
        verses = [v for v in chapter if not _NUMBERED_BOOK_HEADING.match(v)]
        (held if i % EVAL_EVERY == EVAL_EVERY - 1 else train).extend(verses)
    return train, held


def write_sae_data(chapters: list[list[str]], out: Path = ASSETS / "kjv") -> tuple[int, int]:
    """Write out/train.txt and out/eval.txt; return their line counts."""
    train, held = sae_split(chapters)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("\n".join(train) + "\n")
    (out / "eval.txt").write_text("\n".join(held) + "\n")
    return len(train), len(held)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ASSETS / "kjv")
    args = p.parse_args()
    n_train, n_eval = write_sae_data(read_kjv_chapters(), args.out)
    print(f"{args.out}: train {n_train} verses, eval {n_eval} verses")


if __name__ == "__main__":
    main()
