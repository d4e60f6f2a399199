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
# How `packed_contexts` turns rows into contexts; part of the activation cache key, so
# change this string whenever the rule changes.
PACKING_RULE = (
    "v1: BOS at position 0, then context_size-1 tokens of the concatenated rows, "
    "EOS after every row, no overlap, the incomplete tail dropped"
)


LOCAL_BUILDERS = ("text", "json", "csv", "parquet", "arrow", "pandas")  # `datasets` builders


def check_data_files(data_files: Mapping[str, object] | None, builder: str = "text") -> None:
    """Every local data file must exist, be a readable non-empty file and, for the `text`
    builder, be UTF-8 text (hub datasets and URLs are not checked here). A builder of local
    files needs them (without, `datasets` would read the working directory)."""
    if builder in LOCAL_BUILDERS and not data_files:
        raise NsaeError(
            f"data.path={builder} reads local files but data.data_files is empty; valid: "
            "data.data_files.train=<file> and data.data_files.eval=<file>, or a hub dataset "
            "name as data.path"
        )
    for split, files in (data_files or {}).items():
        for f in [files] if isinstance(files, str) else list(files):  # type: ignore[arg-type]
            path = Path(str(f))
            where = f"data file for split {split!r}"
            if "://" in str(f):
                continue
            if not path.exists():
                raise NsaeError(f"{where} not found: {f}")
            if not path.is_file():
                raise NsaeError(f"{where} is a directory, not a file: {f}; valid: a text file")
            if path.stat().st_size == 0:
                raise NsaeError(f"{where} is empty: {f}; valid: a file with text in it")
            if builder == "text":
                with path.open("rb") as fh:
                    head = fh.read(1 << 16)
                try:
                    head.decode("utf-8")
                except UnicodeDecodeError as err:
                    if err.start < len(head) - 4:  # not just a character cut at the end
                        raise NsaeError(
                            f"{where} is not UTF-8 text: {f} (byte {err.start}); "
                            "valid: a UTF-8 text file"
                        ) from None


def load_rows(
    path: str,
    split: str,
    data_files: Mapping[str, object] | None = None,
    streaming: bool = False,
    name: str | None = None,
    revision: str | None = None,
) -> Iterable[Mapping[str, object]]:
    """The rows of one split, from local files or the hub (streamed if asked; `revision`
    pins a hub dataset's git ref)."""
    import datasets

    check_data_files(data_files, path)
    files = dict(data_files) if data_files else None
    if files is not None and split not in files:
        raise NsaeError(f"split {split!r} not in data.data_files; valid: {', '.join(files)}")
    return datasets.load_dataset(
        path, name, data_files=files, split=split, streaming=streaming, revision=revision
    )


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
