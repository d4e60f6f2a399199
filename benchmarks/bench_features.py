"""Wall time of `python -m nsae.features` as a user runs it (start-up, model load, the
streaming pass, the pages), on layer 2 of the embedded model, against a bare baseline
measured in the same run: a fresh process that imports nsae, loads the same model and SAE
and runs the LM forward and the SAE's encode over as many tokens, keeping nothing. The
ratio is what the statistics, the contexts, the logit lens and the pages cost on top.

    python benchmarks/bench_features.py [--features 16384 --tokens 100000 --split train --k 32]
    python benchmarks/bench_features.py --run outputs/runs/<date>/<time> [--tokens 100000]

Without --run: a TopK SAE with random weights (k active features per token, so the pass
sees a trained SAE's sparsity) of --features features on layer 2 of `embedded:kjv-gpt2`,
exported as an nsae layer folder in a temporary directory, over --tokens tokens of the
embedded evaluation split. With --run: that run's layer 2, over --tokens tokens (default
its evaluation set).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nsae.export import export_saes
from nsae.saes import build_sae

D_MODEL = 128  # embedded:kjv-gpt2's width
EVAL_TOKENS = 16384  # the default run's evaluation set (data.n_eval_tokens)


def random_layer(root: Path, n_features: int, k: int) -> Path:
    torch.manual_seed(0)
    sae = build_sae("topk", 1, D_MODEL, n_features, k=k)
    meta = {"model_name": "embedded:kjv-gpt2", "hook_site": "resid_post", "context_size": 128}
    export_saes(sae, [2], torch.full((1, n_features), k / n_features), root, meta)
    return root / "layer_2"


def timed(args: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nsae.features", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
    return seconds


BARE = """
import sys, torch, nsae
from transformers import AutoModelForCausalLM
from nsae.config import asset
layer, n_tokens = sys.argv[1], int(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(asset("kjv-gpt2")).eval()
sae = nsae.load(layer)
ids = torch.randint(0, model.config.vocab_size, (-(-n_tokens // 128), 128))
with torch.inference_mode():
    for batch in ids.split(16):
        x = model(batch, output_hidden_states=True).hidden_states[3]  # resid_post of block 2
        sae.encode(x.reshape(-1, 1, x.shape[-1]))
"""


def bare(layer: Path, n_tokens: int) -> float:
    """The baseline: import, load, LM forward and SAE encode over n_tokens, in a new process."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", BARE, str(layer), str(n_tokens)]
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: a random TopK SAE)")
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", type=int, help="default: 100000 (random), the eval set (run)")
    parser.add_argument("--split", help="default: the eval split (85,632 tokens); train: more")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features"
        if args.run is None:
            target, tokens = random_layer(Path(tmp) / "run", args.features, args.k), args.tokens
            tokens = tokens or 100_000
            what = f"random TopK SAE (k={args.k}), {args.features} features"
        else:
            target, tokens = args.run, args.tokens
            what = f"{args.run} layer 2"
        cmd = [str(target), "--out", str(out)] + (["--layers", "2"] if args.run else [])
        cmd += ["--tokens", str(tokens)] if tokens else []
        cmd += ["--split", args.split] if args.split else []
        seconds = timed(cmd)
        size = sum(p.stat().st_size for p in out.rglob("*.html")) / 2**20
        layer = target / "layer_2" if args.run else target
        baseline = bare(layer, tokens or EVAL_TOKENS)
        print(
            f"nsae.features on {what}, {tokens or 'the eval set of'} tokens: "
            f"{seconds:.1f} s wall, pages {size:.1f} MiB, torch threads "
            f"{torch.get_num_threads()}; bare forward + encode {baseline:.1f} s; "
            f"features/bare {seconds / baseline:.2f}"
        )


if __name__ == "__main__":
    main()
