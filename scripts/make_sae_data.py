"""Write the default SAE data: the whole King James corpus, split by chapter.

    apt-get install -y bible-kjv
    python scripts/make_sae_data.py   # writes nsae/assets/kjv/{train,validation,eval}.txt

The corpus is the one the embedded source model came from (`read_kjv_chapters` in
scripts/train_source_model.py). Chapter i (0-based, in corpus order Genesis 1 ..
Revelation 22, as that function numbers them) goes to eval if i % 10 == 9, to validation
if i % 10 == 4, else to train: eval and validation are each every tenth chapter,
interleaved over the whole book (so they have the register mix of train), and, since
i % 10 in {4, 9} implies i % 5 == 4, every eval and validation chapter is one the LM never
trained on. Validation is what hyperparameters are chosen on (experiment=nsae_tuning), so
the published verdicts, computed on eval, never see the data their settings were tuned on.
The files keep corpus order, one verse per line. The norm sample comes from train, so no
two of train, validation, eval and the norm sample share a context.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from train_source_model import ASSETS, read_kjv_chapters

EVAL_EVERY = 10  # chapter i is eval iff i % EVAL_EVERY == EVAL_EVERY - 1
VALIDATION_AT = 4  # ... and validation iff i % EVAL_EVERY == VALIDATION_AT
# `read_kjv_chapters` takes the headings of numbered books ("1 Samuel 3") for verses
# ("Samuel 3"), so those chapters stay inside the previous chapter. Its chapter indices
# are the ones the LM's held-out split used, so they are kept as they are; only these
# heading lines are dropped from the SAE text.
_NUMBERED_BOOK_HEADING = re.compile(
    r"^(Samuel|Kings|Chronicles|Corinthians|Thessalonians|Timothy|Peter|John) \d+$"
)


def sae_split(chapters: list[list[str]]) -> dict[str, list[str]]:
    """{split: verses}, each in corpus order: eval and validation every tenth chapter."""
    splits: dict[str, list[str]] = {"train": [], "validation": [], "eval": []}
    for i, chapter in enumerate(chapters):
        verses = [v for v in chapter if not _NUMBERED_BOOK_HEADING.match(v)]
        r = i % EVAL_EVERY
        split = "eval" if r == EVAL_EVERY - 1 else "validation" if r == VALIDATION_AT else "train"
        splits[split].extend(verses)
    return splits


def write_sae_data(chapters: list[list[str]], out: Path = ASSETS / "kjv") -> dict[str, int]:
    """Write out/<split>.txt for each split; return their line counts."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, verses in sae_split(chapters).items():
        (out / f"{split}.txt").write_text("\n".join(verses) + "\n")
        counts[split] = len(verses)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ASSETS / "kjv")
    args = p.parse_args()
    counts = write_sae_data(read_kjv_chapters(), args.out)
    print(f"{args.out}: " + ", ".join(f"{k} {n} verses" for k, n in counts.items()))


if __name__ == "__main__":
    main()
