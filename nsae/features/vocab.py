"""Decoder directions read through the source model's unembedding (a logit lens).

Feature j's direction d_j (row j of W_dec) promotes token v by (d_j * g) . W_U[v], with g
the final layer norm's weight where the model has one (`FINAL_NORMS`), else without it;
the norm's centring, scaling by 1/rms and bias are not applied (they do not depend on the
feature). `LENS_NOTE` says which on the page.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

FINAL_NORMS = (
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.norm",
    "model.decoder.final_layer_norm",
)


def final_norm_weight(model: nn.Module) -> tuple[Tensor | None, str]:
    """The final layer norm's weight [D] and its module path, or (None, "")."""
    for path in FINAL_NORMS:
        module: Any = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
        weight = getattr(module, "weight", None)
        if isinstance(weight, Tensor):
            return weight.detach().float(), path
    return None, ""


def lens_note(norm_path: str) -> str:
    if norm_path:
        return (
            f"decoder row x the final layer norm's weight ({norm_path}.weight), times "
            "W_U (the norm's centring, 1/rms and bias not applied)"
        )
    return "decoder row times W_U (no final layer norm found: applied without one)"


@torch.no_grad()
def logit_lens(
    W_dec_FD: Tensor, model: nn.Module, k: int = 10, chunk: int = 2048
) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """Per feature, the k tokens its direction promotes most and the k it suppresses most:
    (up ids [F, k], up logits, down ids [F, k], down logits, note)."""
    W_U_VD = model.get_output_embeddings().weight.detach().float()
    g_D, path = final_norm_weight(model)
    ups, up_vals, downs, down_vals = [], [], [], []
    for d_fD in W_dec_FD.float().split(chunk):
        logits_fV = (d_fD * g_D if g_D is not None else d_fD) @ W_U_VD.T
        top = logits_fV.topk(k, dim=1)
        bottom = logits_fV.topk(k, dim=1, largest=False)
        ups.append(top.indices)
        up_vals.append(top.values)
        downs.append(bottom.indices)
        down_vals.append(bottom.values)
    cat = torch.cat
    return cat(ups), cat(up_vals), cat(downs), cat(down_vals), lens_note(path)


def token_strings(tokenizer: Any, n: int | None = None) -> list[str]:
    """Each token id's text as the tokenizer decodes it alone; a token that is part of a
    multi-byte character (decoded alone as U+FFFD) by its vocabulary entry instead."""
    size = n if n is not None else len(tokenizer)
    out = [tokenizer.decode([i]) for i in range(size)]
    return [
        s if "\ufffd" not in s else str(tokenizer.convert_ids_to_tokens(i))
        for i, s in enumerate(out)
    ]
