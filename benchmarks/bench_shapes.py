"""Real-shape benchmarks: a GPT-2-small-shaped source (`source=gpt2_small_shape`: 12 layers,
d 768, random weights, nothing downloaded), each nsae path against a bare PyTorch loop
doing the same work, measured in the same run.

    python benchmarks/bench_shapes.py [--layers 1 4 12] [--expansions 8 32]
        [--harvest-batches 1] [--sae-batch 128] [--sae-steps 2] [--e2e-steps 5]
        [--only harvest sae e2e]

harvest: nsae's Harvester (hooks on layers 0..L-1, early stop, stacked [B, T, L, D]) vs the
  plain forward of the first L blocks with `output_hidden_states`, stacked the same way.
sae: one SAE-bank training step (nsae's standard SAE class and loss: forward, backward,
  decoder-gradient projection, Adam, renormalisation) on [B, L, 768] at each expansion, vs
  the same math written out in plain torch (two batched matmuls per step, no nsae code).
e2e: `nsae.train` in this process (LM on the fly, no cache, expansion 8; the first step
  untimed) vs a bare loop (truncated forward with `output_hidden_states`, the bare SAE
  step), timed before and after nsae's run; training tokens/s and layer-tokens/s
  (tokens/s x L).
harvest and sae alternate the two paths round by round and report medians and the median
of the per-round ratios (the SAE step: both on the same parameters and Adam state).
The defaults fit ~10 minutes on 2 loaded CPU cores (hence the small SAE batch of 128
tokens); on a GPU run the same command (the model and SAEs move to CUDA by themselves) with
e.g. --sae-batch 4096 --sae-steps 10 --harvest-batches 8 --e2e-batch 4096 --e2e-steps 20.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from common import bare_step, config, timed_run
from torch import Tensor, nn

from nsae.data.source import Harvester, configured_source, transformer_blocks
from nsae.loss import SAELoss
from nsae.saes import build_sae

CONTEXT, COEFF = 128, 1e-3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn: Callable[[Tensor], object], inputs: list[Tensor], device: torch.device) -> float:
    """Wall time of fn over every input (the device synchronised at both ends)."""
    sync(device)
    start = time.perf_counter()
    for x in inputs:
        fn(x)
    sync(device)
    return time.perf_counter() - start


def first_blocks(model: nn.Module, n: int) -> nn.Module:
    """The base model (no LM head) with only its first n blocks; the weights are shared."""
    base = copy.copy(model.base_model)
    base._modules = dict(base._modules)
    base.h = nn.ModuleList(list(transformer_blocks(model)[:n]))
    return base


class BareHarvest:
    """[B, T, n, D]: the first n blocks' outputs from a plain forward with
    `output_hidden_states` (no hooks), stacked as nsae stacks them."""

    def __init__(self, base: nn.Module, n: int) -> None:
        self.base, self.n = base, n

    @torch.no_grad()
    def __call__(self, ids_BT: Tensor) -> Tensor:
        hidden = self.base(ids_BT, output_hidden_states=True, use_cache=False).hidden_states
        return torch.stack(hidden[1 : self.n + 1], dim=2)


class BareBank:
    """The standard SAE bank in plain torch: f = relu((x - b_d) W_e + b_e), x_hat = f W_d + b_d
    per layer, loss sum_l mean_b (||x_hat - x||^2 + c sum_j f_j), the decoder gradient's
    component along each row removed, Adam, rows renormalised. On the given parameters and
    optimizer (nsae's, to time both on the same memory), or on its own (`fresh`)."""

    def __init__(self, W_e: Tensor, W_d: Tensor, b_e: Tensor, b_d: Tensor, opt: Any) -> None:
        self.W_e, self.W_d, self.b_e, self.b_d, self.opt = W_e, W_d, b_e, b_d, opt

    @classmethod
    def fresh(cls, n_layers: int, d: int, m: int, device: torch.device) -> BareBank:
        bound_e, bound_d = d**-0.5, m**-0.5
        W_e = torch.empty(n_layers, d, m, device=device).uniform_(-bound_e, bound_e)
        W_d = torch.empty(n_layers, m, d, device=device).uniform_(-bound_d, bound_d)
        b_e, b_d = torch.zeros(n_layers, m, device=device), torch.zeros(n_layers, d, device=device)
        params = [nn.Parameter(t) for t in (W_e, W_d, b_e, b_d)]
        return cls(*params, torch.optim.Adam(params, lr=1e-4))

    def __call__(self, x_BLD: Tensor) -> None:
        x_LBD = x_BLD.transpose(0, 1)
        centred_LBD = (x_BLD - self.b_d).transpose(0, 1)
        f_LBM = torch.relu(torch.baddbmm(self.b_e[:, None], centred_LBD, self.W_e))
        x_hat_LBD = torch.baddbmm(self.b_d[:, None], f_LBM, self.W_d)
        recon = (x_hat_LBD - x_LBD).pow(2).sum(-1).mean(1).sum()
        (recon + COEFF * f_LBM.sum(-1).mean(1).sum()).backward()
        with torch.no_grad():
            unit = self.W_d / self.W_d.norm(dim=-1, keepdim=True)
            self.W_d.grad.sub_((self.W_d.grad * unit).sum(-1, keepdim=True) * unit)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.W_d.div_(self.W_d.norm(dim=-1, keepdim=True))


class BareTrain:
    """The bare end-to-end step: harvest a batch of contexts, one bare SAE-bank step."""

    def __init__(self, harvest: BareHarvest, bank: BareBank) -> None:
        self.harvest, self.bank = harvest, bank

    def __call__(self, ids_BT: Tensor) -> None:
        self.bank(self.harvest(ids_BT).flatten(0, 1))


class NsaeStep:
    """nsae's SAE-bank step (`common.bare_step`: its SAE class and loss, no Lightning)."""

    def __init__(self, n_layers: int, d: int, m: int, device: torch.device) -> None:
        self.sae = build_sae("none", n_layers, d, m).to(device)
        self.loss_fn = SAELoss("none", torch.full((n_layers,), COEFF, device=device))
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=1e-4)

    def bare_twin(self) -> BareBank:
        """The bare step on the same parameters and optimizer."""
        s = self.sae
        return BareBank(s.W_enc_LDM, s.W_dec_LMD, s.b_enc_LM, s.b_dec_LD, self.opt)

    def __call__(self, x_BLD: Tensor) -> None:
        bare_step(self.sae, self.loss_fn, self.opt, x_BLD)


def paired(
    a: Callable[[Tensor], object],
    b: Callable[[Tensor], object],
    inputs: list[Tensor],
    rounds: int,
    device: torch.device,
) -> tuple[float, float, float]:
    """Alternate a and b over `inputs`, `rounds` times: (median seconds of a, of b, median
    of the per-round ratios b/a), so both share the machine's load round by round."""
    t_a, t_b = [], []
    for _ in range(rounds):
        t_a.append(seconds(a, inputs, device))
        t_b.append(seconds(b, inputs, device))
    ratios = [tb / ta for ta, tb in zip(t_a, t_b, strict=True)]
    return statistics.median(t_a), statistics.median(t_b), statistics.median(ratios)


def bench_harvest(model: nn.Module, layers: list[int], ids: list[Tensor], rounds: int) -> list[str]:
    rows, device = [], ids[0].device
    n_tokens = sum(i.numel() for i in ids)
    for n in layers:
        harvester = Harvester(model, list(range(n)), "resid_post")
        bare = BareHarvest(first_blocks(model, n), n)
        t_nsae, t_bare, ratio = paired(harvester, bare, ids, rounds, device)
        rows.append(
            f"| harvest | {n} | | {n_tokens / t_nsae:,.0f} tokens/s | "
            f"{n_tokens / t_bare:,.0f} tokens/s | {ratio:.3f} |"
        )
        print(rows[-1], flush=True)
    return rows


def bench_sae(
    layers: list[int], expansions: list[int], d: int, batch: int, steps: int, device: torch.device
) -> list[str]:
    rows = []
    for n in layers:
        x_BLD = torch.randn(batch, n, d, device=device)
        for e in expansions:
            nsae = NsaeStep(n, d, e * d, device)
            bare = nsae.bare_twin()
            nsae(x_BLD), bare(x_BLD)  # warm-up
            s_nsae, s_bare, ratio = paired(nsae, bare, [x_BLD], steps, device)
            del nsae, bare
            gc.collect()
            flops = 12 * batch * d * e * d * n  # 2 matmuls forward, twice that backward
            rows.append(
                f"| SAE step, batch {batch} | {n} | {e} ({e * d:,}) | {s_nsae:.3f} s/step "
                f"({flops / s_nsae / 1e9:.0f} GFLOP/s) | {s_bare:.3f} s/step | {ratio:.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def bench_e2e(
    model: nn.Module,
    folder: str,
    layers: list[int],
    batch: int,
    steps: int,
    expansion: int,
    device: torch.device,
) -> list[str]:
    rows, d = [], model.config.hidden_size
    vocab = 4096  # the embedded tokenizer's ids
    for n in layers:
        cfg = config(
            f"source.name={folder}",
            f"source.layers=[{','.join(map(str, range(n)))}]",
            f"sae.expansion_factor={expansion}",
            "data.cache=false",
            f"data.batch_size={batch}",
            f"data.harvest_batch={max(1, batch // CONTEXT)}",
            f"data.buffer_tokens={2 * batch}",
            f"data.n_norm_tokens={batch}",
            f"data.n_eval_tokens={CONTEXT}",
            "logger=none",
            "metrics.splice=false",
            f"trainer.max_steps={steps + 1}",
            f"trainer.val_check_interval={steps + 2}",  # no checkpoint inside the timing
            "+trainer.limit_val_batches=0",
        )
        bank = BareBank.fresh(n, d, expansion * d, device)
        train = BareTrain(BareHarvest(first_blocks(model, n), n), bank)
        shape = (max(1, batch // CONTEXT), CONTEXT)
        ids = [torch.randint(0, vocab, shape, device=device) for _ in range(steps + 1)]
        train(ids[0])  # warm-up, as nsae's first step is not timed
        t_bare = seconds(train, ids[1:], device)  # bare before and after nsae: same load
        timer = timed_run(cfg, skip=1)
        t_bare += seconds(train, ids[1:], device)
        ours = timer.steps * batch / timer.seconds
        bare = 2 * steps * ids[0].numel() / t_bare
        del train, bank
        gc.collect()
        rows.append(
            f"| end to end, x{expansion} | {n} | | {ours:,.0f} tokens/s = "
            f"{ours * n:,.0f} layer-tokens/s | {bare:,.0f} tokens/s = "
            f"{bare * n:,.0f} layer-tokens/s | {ours / bare:.3f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=[1, 4, 12])
    p.add_argument("--expansions", type=int, nargs="+", default=[8, 32])
    p.add_argument("--harvest-batches", type=int, default=1, help="batches of 8 x 128 tokens")
    p.add_argument("--rounds", type=int, default=2, help="harvest: paired rounds")
    p.add_argument("--sae-batch", type=int, default=128, help="tokens per SAE step")
    p.add_argument("--sae-steps", type=int, default=2, help="paired timed steps after one warm-up")
    p.add_argument("--e2e-batch", type=int, default=128, help="tokens per training step")
    p.add_argument("--e2e-steps", type=int, default=5)
    p.add_argument("--e2e-expansion", type=int, default=8)
    p.add_argument(
        "--only", nargs="+", choices=("harvest", "sae", "e2e"), default=["harvest", "sae", "e2e"]
    )
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model, tok = configured_source(config("source=gpt2_small_shape").source)
    model = model.to(device)
    d = model.config.hidden_size
    print(
        f"gpt2_small_shape: {len(transformer_blocks(model))} layers, d {d}; device {device}, "
        f"threads {torch.get_num_threads()}, torch {torch.__version__}\n"
        "| what | L | expansion (features) | nsae | bare loop | nsae/bare ratio |\n"
        "| --- | --- | --- | --- | --- | --- |",
        flush=True,
    )
    started = time.perf_counter()
    if "harvest" in args.only:
        ids = [
            torch.randint(0, len(tok), (8, CONTEXT), device=device)
            for _ in range(args.harvest_batches)
        ]
        bench_harvest(model, args.layers, ids, args.rounds)
    if "sae" in args.only:
        bench_sae(args.layers, args.expansions, d, args.sae_batch, args.sae_steps, device)
    if "e2e" in args.only:
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)  # bit for bit source=gpt2_small_shape, as a directory
            tok.save_pretrained(folder)
            bench_e2e(
                model,
                folder,
                args.layers,
                args.e2e_batch,
                args.e2e_steps,
                args.e2e_expansion,
                device,
            )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
