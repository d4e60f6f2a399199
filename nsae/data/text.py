"""Text to packed token contexts, through Hugging Face `datasets`.

`path` is a `datasets` builder (`text`, `json`, `parquet`) with local `data_files`, or a
hub dataset name (optionally streamed). Rows carry text (`text_column`) or token ids
(an `input_ids` or `tokens` column). Contexts are packed to `context_size` tokens, each
starting with BOS, documents separated by EOS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from nsae.errors import NsaeError

TOKEN_COLUMNS = ("input_ids", "tokens")


def check_data_files(data_files: Mapping[str, object] | None) -> None:
    """Every local data file must exist (hub datasets have none)."""
    for split, files in (data_files or {}).items():
        for f in [files] if isinstance(files, str) else list(files):  # type: ignore[arg-type]
            if "://" not in str(f) and not Path(str(f)).exists():
                raise NsaeError(f"data file for split {split!r} not found: {f}")


def load_rows(
    path: str,
    split: str,
    data_files: Mapping[str, object] | None = None,
    streaming: bool = False,
    name: str | None = None,
) -> Iterable[Mapping[str, object]]:
    """The rows of one split, from local files or the hub (streamed if asked)."""
    import datasets

    check_data_files(data_files)
    files = dict(data_files) if data_files else None
    if files is not None and split not in files:
        raise NsaeError(f"split {split!r} not in data.data_files; valid: {', '.join(files)}")
    return datasets.load_dataset(path, name, data_files=files, split=split, streaming=streaming)


def row_tokens(row: Mapping[str, object], tokenizer: object, text_column: str) -> list[int]:
    for col in TOKEN_COLUMNS:
        if col in row:
            return list(row[col])  # type: ignore[call-overload]
    if text_column in row:
        return tokenizer(row[text_column])["input_ids"]  # type: ignore[operator]
    raise NsaeError(
        f"dataset rows have no text column {text_column!r} nor a token column "
        f"({', '.join(TOKEN_COLUMNS)}); columns: {', '.join(row)}"
    )


def packed_contexts(
    rows: Iterable[Mapping[str, object]],
    tokenizer: object,
    context_size: int,
    text_column: str = "text",
) -> Iterator[Tensor]:
    """Yield [context_size] LongTensors: BOS, then context_size - 1 packed tokens."""
    bos = tokenizer.bos_token_id  # type: ignore[attr-defined]
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    if bos is None:
        raise NsaeError("the tokenizer has no BOS token; set one to pack contexts")
    body = context_size - 1
    pending: list[int] = []
    for row in rows:
        pending.extend(row_tokens(row, tokenizer, text_column))
        if eos is not None:
            pending.append(eos)
        while len(pending) >= body:
            yield torch.tensor([bos, *pending[:body]], dtype=torch.long)
            del pending[:body]
