"""A TopK SAE training step with sparse decode against the dense ReLU SAE step, at
GPT-2-small shapes, side by side in one run.

    python benchmarks/bench_topk.py [--d 768 --features 24576 --k 64 --batch 4096 --rounds 3]

Both steps are nsae's own (`train_forward`, the loss, backward, the decoder constraint,
Adam) on one layer. The TopK decoder reads only the k active rows per token
(`embedding_bag`), where the ReLU SAE multiplies the whole [B, M] x [M, D] product; the
encoder is dense in both. Each round times `--steps` steps of each, alternating; the ratio
is the median over rounds of topk/relu seconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nsae.loss import SAELoss
from nsae.saes import build_sae


def step_seconds(sae_type: str, args: argparse.Namespace, x_BLD: torch.Tensor) -> float:
    kwargs = {"k": args.k} if sae_type == "topk" else {}
    torch.manual_seed(0)
    sae = build_sae(sae_type, 1, args.d, args.features, **kwargs).train()
    loss_fn = SAELoss("none", torch.full((1,), 1e-3))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)

    def step() -> None:
        loss_fn(x_BLD, sae.train_forward(x_BLD)).total.backward()
        sae.before_optimizer_step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.after_optimizer_step()

    step()  # warm-up: Adam's state, allocator
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--features", type=int, default=24576)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x_BLD = torch.randn(args.batch, 1, args.d) * 10
    ratios, relu, topk = [], [], []
    for _ in range(args.rounds):
        relu.append(step_seconds("none", args, x_BLD))
        topk.append(step_seconds("topk", args, x_BLD))
        ratios.append(topk[-1] / relu[-1])
    print(
        f"d {args.d}, {args.features} features, k {args.k}, batch {args.batch}: "
        f"relu {statistics.median(relu):.3f} s/step, topk {statistics.median(topk):.3f} s/step"
    )
    print(
        f"ratio topk/relu {statistics.median(ratios):.3f} (median of {args.rounds} rounds: "
        f"{', '.join(f'{r:.3f}' for r in ratios)}); target <= 0.6"
    )


if __name__ == "__main__":
    main()
