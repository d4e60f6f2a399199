"""`python -m nsae.features RUN_DIR [--layers 0,2] [--tokens N] [--compare OTHER_RUN_DIR]
[--match-threshold 0.5] [--model NAME_OR_PATH] [--out DIR]`: write one self-contained
HTML page per layer and an index.html (default: RUN_DIR/features/), opened from disk.

Statistics are over N held-out tokens, by default the run's evaluation set (its config.yaml
rebuilds source and data); RUN_DIR may also be one SAELens-format layer folder (--model
names its source model when its cfg.json does not name a local one). Bad input: one line
`nsae: error: ...` and exit status 2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

from nsae.errors import NsaeError, one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise NsaeError(message)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m nsae.features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="a run directory or one layer folder")
    p.add_argument("--layers", help="comma-separated layer indices (default: all)")
    p.add_argument("--tokens", type=int, help="held-out tokens (default: data.n_eval_tokens)")
    p.add_argument("--split", help="the data split to read (default: data.eval_split)")
    p.add_argument("--compare", type=Path, help="another run of the same model and layers")
    p.add_argument(
        "--match-threshold",
        type=float,
        default=0.5,
        help="pairs below this decoder cosine have no counterpart (default 0.5)",
    )
    p.add_argument("--model", help="source model (local path or hub name) for a layer folder")
    p.add_argument("--out", type=Path, help="output directory (default: RUN_DIR/features)")
    p.add_argument("--top-k", type=int, default=10, help="top activating contexts per feature")
    args = p.parse_args(argv)
    if args.tokens is not None and args.tokens < 1:
        raise NsaeError(f"--tokens={args.tokens}; valid: an integer >= 1")
    if not -1 <= args.match_threshold <= 1:
        raise NsaeError(f"--match-threshold={args.match_threshold}; valid: a cosine in [-1, 1]")
    if args.top_k < 1:
        raise NsaeError(f"--top-k={args.top_k}; valid: an integer >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = arguments(argv)
        from nsae.features.main import run

        started = time.monotonic()
        index = run(args)
        print(f"wrote {index} ({time.monotonic() - started:.1f} s)")
    except NsaeError as err:
        print(f"nsae: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
