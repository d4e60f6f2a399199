"""End-to-end training throughput (harvest + train, no activation cache) against a bare
PyTorch loop doing the same work, in one run.

    python benchmarks/bench_e2e.py [--steps 150] [--gpt2-small]

nsae: `python -m nsae.train data.cache=false` in this process (the LM runs on the fly, its
activations stream through the shuffle buffer into training), timed over the training loop.
Bare: the same model's forward over the same number of tokens with `output_hidden_states`,
the activations of every layer stacked and fed straight (no shuffling) to the same SAE bank
with Adam and the decoder constraint. Both report training tokens/s; the ratio is
nsae/bare. `--gpt2-small` (GPU only) swaps in a randomly initialised GPT-2-small-shaped
model (12 layers, d 768).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import bare_step, config, timed_run

from nsae.config import asset
from nsae.data.source import load_source
from nsae.loss import SAELoss
from nsae.saes import build_sae


def gpt2_small(folder: str) -> str:
    """A random GPT-2-small-shaped model with the embedded tokenizer, saved in `folder`."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(asset("kjv-gpt2"))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def bare_tokens_per_s(cfg, device: torch.device) -> float:
    model, _ = load_source(cfg.source.name)
    model = model.to(device).eval()
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    sae = build_sae(cfg.sae.type, n_layers, d, d * cfg.sae.expansion_factor).to(device)
    loss_fn = SAELoss("none", torch.full((n_layers,), 1.0, device=device))
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.optim.lr)
    B, T = cfg.data.harvest_batch, cfg.data.context_size
    steps_per_harvest = B * T // cfg.data.batch_size
    n_harvests = cfg.trainer.max_steps // steps_per_harvest
    vocab = model.config.vocab_size
    start = time.perf_counter()
    for _ in range(n_harvests):
        ids = torch.randint(0, vocab, (B, T), device=device)
        with torch.no_grad():
            hidden = model.base_model(ids, output_hidden_states=True).hidden_states[1:]
        x_NLD = torch.stack(hidden, dim=2).flatten(0, 1)
        for x_BLD in x_NLD.split(cfg.data.batch_size):
            bare_step(sae, loss_fn, opt, x_BLD)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_harvests * B * T / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--gpt2-small", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.gpt2_small and device.type != "cuda":
        raise SystemExit("--gpt2-small needs a GPU")
    with tempfile.TemporaryDirectory() as tmp:
        source = [f"source.name={gpt2_small(tmp + '/gpt2-small')}"] if args.gpt2_small else []
        cfg = config(
            *source,
            f"trainer.max_steps={args.steps}",
            f"trainer.val_check_interval={args.steps}",
            "data.cache=false",
            "logger=none",
            "metrics.splice=false",
            "+trainer.limit_val_batches=0",  # time training alone
        )
        bare = bare_tokens_per_s(cfg, device)
        timer = timed_run(cfg)
    ours = timer.steps * cfg.data.batch_size / timer.seconds
    print(f"source {cfg.source.name}, device {device}, threads {torch.get_num_threads()}")
    print(f"  bare forward + SAE loop {bare:10,.0f} training tokens/s")
    print(f"  nsae end to end         {ours:10,.0f} training tokens/s")
    print(f"nsae/bare ratio {ours / bare:.3f}")


if __name__ == "__main__":
    main()
