"""Train the embedded default source model: a small GPT-2 on the King James Bible.

The corpus comes from Debian's `bible-kjv` package (public domain, offline):

    apt-get install -y bible-kjv
    python scripts/train_source_model.py            # ~15 min on 2 CPU cores

Every fifth chapter is held out from LM training. The default SAE data in
`nsae/assets/kjv/` is the whole corpus, split by scripts/make_sae_data.py (eval = every
tenth chapter, all of them held out here; train = the rest), which this script also
writes; the model and its byte-level BPE tokenizer ship in Hugging Face format in
`nsae/assets/kjv-gpt2/`.
The held-out next-token loss and the corpus' unigram entropy (same tokens) are written
to `nsae/assets/kjv-gpt2/training_stats.json` and quoted in the README.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ASSETS = Path(__file__).resolve().parents[1] / "nsae" / "assets"
EOT = "<|endoftext|>"


def read_kjv_chapters() -> list[list[str]]:
    """Return the Bible as a list of chapters, each a list of verse strings."""
    raw = subprocess.run(
        ["bible", "-l0", "gen1:1-rev22:21"], capture_output=True, text=True, check=True
    ).stdout
    chapters: list[list[str]] = []
    for line in raw.splitlines():
        line = line.strip()
        verse = re.match(r"^\d+ (.*)$", line)
        if verse:
            chapters[-1].append(verse.group(1))
        elif line:  # a heading such as "Genesis 1"
            chapters.append([])
    return [c for c in chapters if c]


def split_chapters(chapters: list[list[str]]) -> tuple[list[str], list[str]]:
    """LM-train verses and held-out verses (every fifth chapter)."""
    lm, held = [], []
    for i, chapter in enumerate(chapters):
        (held if i % 5 == 4 else lm).extend(chapter)
    return lm, held


def train_tokenizer(lines: list[str], vocab_size: int, out: Path) -> PreTrainedTokenizerFast:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=EOT, eos_token=EOT, unk_token=EOT
    )
    tok.model_max_length = 128
    return tok


def token_stream(tok: PreTrainedTokenizerFast, lines: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tok(lines)["input_ids"]:
        ids.extend(enc)
        ids.append(tok.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def unigram_entropy_nats(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats/token) of the held-out tokens under the add-one unigram model."""
    counts = Counter(train_ids.tolist())
    total = len(train_ids) + vocab
    return -sum(math.log((counts.get(t, 0) + 1) / total) for t in eval_ids.tolist()) / len(eval_ids)


@torch.no_grad()
def eval_loss(model: GPT2LMHeadModel, ids: torch.Tensor, ctx: int) -> float:
    model.eval()
    n = (len(ids) - 1) // ctx * ctx
    x = ids[:n].view(-1, ctx)
    losses = [model(xb, labels=xb).loss.item() for xb in x.split(64)]
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()
    torch.manual_seed(0)

    from make_sae_data import write_sae_data  # (it imports this module's reader)

    chapters = read_kjv_chapters()
    lm_lines, held_lines = split_chapters(chapters)
    write_sae_data(chapters)

    model_dir = ASSETS / "kjv-gpt2"
    tok = train_tokenizer(lm_lines, args.vocab, model_dir)
    train_ids = token_stream(tok, lm_lines)
    held_ids = token_stream(tok, held_lines)
    print(f"LM-train tokens {len(train_ids):,}  held-out tokens {len(held_ids):,}")

    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=args.ctx,
        n_embd=args.d_model,
        n_layer=args.layers,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
        ),
    )
    t0 = time.time()
    for step in range(args.steps):
        starts = torch.randint(0, len(train_ids) - args.ctx, (args.batch,))
        xb = torch.stack([train_ids[s : s + args.ctx] for s in starts.tolist()])
        loss = model(xb, labels=xb).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)

    held_loss = eval_loss(model, held_ids, args.ctx)
    unigram = unigram_entropy_nats(train_ids, held_ids, len(tok))
    stats = {
        "corpus": "King James Bible (Debian bible-kjv), every 5th chapter held out",
        "lm_train_tokens": len(train_ids),
        "heldout_tokens": len(held_ids),
        "heldout_loss_nats": round(held_loss, 4),
        "unigram_entropy_nats": round(unigram, 4),
        "steps": args.steps,
        "batch": args.batch,
        "context": args.ctx,
    }
    print(json.dumps(stats, indent=2))
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    (model_dir / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    main()
