"""`python -m nsae.cache`: list and remove the entries of the activation cache.

    python -m nsae.cache                        # size, model, data, tokens, layers, last use
    python -m nsae.cache remove 0646353a 29c0   # entries by key (a unique prefix is enough)
    python -m nsae.cache prune --unused-for 7d  # those not used for 7 days (m, h, d, w)
    python -m nsae.cache prune --all            # every entry

`--dir` names the cache (default: `$NSAE_CACHE_DIR`, else `outputs/activation_cache`, as
`data.cache_dir`). Entries are the activation caches (`<key>/acts.npy`, `nsae.data.cache`)
and the fixed inputs stored beside them (`fixed/<key>.pt`, `nsae.data.fixed`). An entry
whose build lock a job holds (it is being built) is never removed: it is listed as locked
and kept. A job records an entry's use in `<key>.used` (its modification time); entries
written before that record their build time instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nsae.data.cache import locked
from nsae.errors import NsaeError
from nsae.rundir import ASSET_MARK, display_path

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Entry:
    kind: str  # activations | fixed
    key: str
    root: Path  # the directory that holds its lock file
    files: list[Path]
    meta: dict[str, Any]

    @property
    def size(self) -> int:
        return sum(
            p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*"))
            for p in self.files
        )

    @property
    def last_used(self) -> float:
        used = self.root / f"{self.key}.used"
        marks = [used] if used.exists() else [p for p in self.files if p.exists()]
        return max((p.stat().st_mtime for p in marks), default=0.0)

    @property
    def lock(self) -> Path:
        return self.root / f"{self.key}.lock"


def entries(root: Path) -> list[Entry]:
    found = []
    for meta in sorted(root.glob("*/meta.json")):
        if ".tmp-" not in meta.parent.name:
            data = json.loads(meta.read_text())
            found.append(Entry("activations", meta.parent.name, root, [meta.parent], data))
    for pt in sorted((root / "fixed").glob("*.pt")):
        meta = pt.with_suffix(".json")
        data = json.loads(meta.read_text()) if meta.is_file() else {}
        found.append(Entry("fixed", pt.stem, pt.parent, [pt, meta], data))
    return found


def describe(e: Entry) -> list[str]:
    m = e.meta
    data = m.get("data") or {}
    where = display_path(str(data.get("path", "-")))
    where = f"{where}:{data['split']}" if data.get("split") else str(where)
    files = data.get("files") or []
    where += f" ({len(files)} file{'s' * (len(files) != 1)})" if files else ""
    layers = m.get("layers")
    tokens = m.get("n_tokens") or m.get("n_norm_tokens") or "-"
    return [
        e.key,
        e.kind,
        human(e.size),
        model_name(str(m.get("model", "-"))),
        where,
        str(tokens),
        ",".join(map(str, layers)) if isinstance(layers, list) else "-",
        age(time.time() - e.last_used),
    ]


def model_name(path: str) -> str:
    """A shipped model as `embedded:<name>`, whichever checkout's path the entry recorded."""
    if ASSET_MARK in path:
        return "embedded:" + path.rsplit(ASSET_MARK, 1)[1]
    return str(display_path(path))


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def duration(text: str) -> float:
    """`7d` -> seconds (s, m, h, d, w)."""
    unit = text[-1:] if text[-1:] in UNITS else "s"
    number = text[:-1] if text[-1:] in UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise NsaeError(
            f"--unused-for {text}: valid: a number and a unit, e.g. 30m, 12h, 7d"
        ) from None
    return value * UNITS[unit]


def remove(entry: Entry) -> bool:
    """Remove one entry unless its build lock is held; whether it was removed."""
    with locked(entry.lock, wait=False) as free:
        if not free:
            return False
        for path in entry.files:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        (entry.root / f"{entry.key}.used").unlink(missing_ok=True)
    return True


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nsae.cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", type=Path, default=None, help="the cache directory")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="list the entries (the default)")
    rm = sub.add_parser("remove", help="remove entries by key (a unique prefix is enough)")
    rm.add_argument("keys", nargs="+")
    prune = sub.add_parser("prune", help="remove entries unused for a while, or all")
    group = prune.add_mutually_exclusive_group(required=True)
    group.add_argument("--unused-for", help="e.g. 7d, 12h, 30m")
    group.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    root = args.dir or Path(os.environ.get("NSAE_CACHE_DIR", "outputs/activation_cache"))
    try:
        if not root.is_dir():
            raise NsaeError(f"--dir {root}: no such cache directory")
        found = entries(root)
        if args.command in (None, "list"):
            return show(found, root)
        if args.command == "remove":
            chosen = [pick(found, key) for key in args.keys]
        elif args.all:
            chosen = found
        else:
            cutoff = time.time() - duration(args.unused_for)
            chosen = [e for e in found if e.last_used < cutoff]
    except NsaeError as err:
        print(f"nsae: error: {err}", file=sys.stderr)
        return 2
    freed = 0
    for entry in chosen:
        size = entry.size
        if remove(entry):
            freed += size
            print(f"removed {entry.kind} {entry.key} ({human(size)})")
        else:
            print(f"kept {entry.kind} {entry.key}: a job holds its build lock")
    print(f"freed {human(freed)}")
    return 0


def pick(found: list[Entry], key: str) -> Entry:
    matches = [e for e in found if e.key.startswith(key)]
    if len(matches) != 1:
        what = "no entry" if not matches else f"{len(matches)} entries"
        valid = ", ".join(e.key for e in found) or "(the cache is empty)"
        raise NsaeError(f"{key}: {what} with this key; valid: {valid}")
    return matches[0]


def show(found: list[Entry], root: Path) -> int:
    header = ["key", "kind", "size", "model", "data", "tokens", "layers", "last used"]
    rows = [describe(e) for e in found]
    for e, row in zip(found, rows, strict=True):
        with locked(e.lock, wait=False) as free:
            row[-1] += "" if free else " (locked: being built)"
    print(table(rows, header) if rows else f"{root}: no entries")
    print(f"{len(found)} entries, {human(sum(e.size for e in found))} in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
