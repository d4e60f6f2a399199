"""Content fingerprints of what a cache key depends on: files, model directories, sources.

Content hashes are cheap at start-up: each file is hashed (sha256) once, and the digest is
remembered in `<cache root>/file_digests.json`, keyed by (absolute path, size, mtime_ns);
a file whose size or mtime changed is hashed again, and so is one whose mtime lies within
2 s of when it was hashed (mtime ticks are coarse, so a rewrite in the same tick would
otherwise go unseen: git's "racily clean" rule). Concurrent jobs may race on that index;
the loser's digests are merely computed again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

DIGEST_INDEX = "file_digests.json"
RACY_NS = 2_000_000_000  # a file modified this close to its hashing is hashed again


def file_digest(path: str | Path, root: str | Path | None) -> str:
    """sha256 of a file's contents, remembered in `root/file_digests.json` by (absolute
    path, size, mtime_ns) (not remembered when root is None)."""
    path = Path(path).resolve()
    st = path.stat()
    index_path = Path(root) / DIGEST_INDEX if root is not None else None
    try:
        index = json.loads(index_path.read_text()) if index_path else {}
    except (OSError, ValueError):
        index = {}
    known = index.get(str(path))
    if (
        known
        and (known["size"], known["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        and st.st_mtime_ns < known["hashed_at_ns"] - RACY_NS
    ):
        return known["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    index[str(path)] = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "hashed_at_ns": time.time_ns(),
        "sha256": h.hexdigest(),
    }
    if index_path is None:
        return h.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f"{DIGEST_INDEX}.{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    tmp.replace(index_path)
    return index[str(path)]["sha256"]


def model_fingerprint(name: str, root: str | Path) -> dict[str, Any]:
    """A local model directory: the sha256 of every file in it (weights, config, all
    tokenizer files). A hub name: the name and the commit it resolves to in the local
    Hugging Face cache ("unresolved" when it is not there)."""
    path = Path(name)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"files": {str(p.relative_to(path)): file_digest(p, root) for p in files}}
    try:
        from huggingface_hub import snapshot_download

        commit = Path(snapshot_download(name, local_files_only=True)).name
    except Exception:  # any failure to resolve it offline
        commit = "unresolved"
    return {"hub": name, "revision": commit}


def source_fingerprint(source: Any, root: str | Path) -> dict[str, Any]:
    """What fixes a source LM's weights: `model_fingerprint(name)`, or for `init: random`
    the config, seed, tokenizer files, and the torch and transformers versions (the
    initialisation code)."""
    if source.get("init", "pretrained") != "random":
        return model_fingerprint(str(source["name"]), root)
    import transformers
    from omegaconf import OmegaConf

    config = source["config"]
    return {
        "config": OmegaConf.to_container(config) if OmegaConf.is_config(config) else config,
        "seed": int(source.get("seed", 0)),
        "tokenizer": model_fingerprint(str(source["tokenizer"]), root),
        "versions": [torch.__version__, transformers.__version__],
    }
