"""Resampling dead features of L1-penalised SAEs (Anthropic's "Towards Monosemanticity").

Every `sae.resample.every_steps` training steps, per layer, each feature that did not fire
in that window is re-initialised from an input the SAE reconstructs badly: tokens of the
current batch are drawn with probability proportional to their squared reconstruction
error; for a drawn token x, the feature's decoder row becomes (x - b_dec) / ||x - b_dec||,
scaled to the mean decoder-row norm of the layer's live features (1 for unit-norm
decoders), its encoder column the unit direction times `encoder_scale` x the mean
encoder-column norm of the live features, and its encoder bias 0. The optimizer's state
(Adam's moments) of exactly those rows and columns is reset, so stale momentum does not
undo the resample.
Live features are not touched. The TopK family has AuxK instead and is not resampled.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def resample_dead(
    sae: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x_BLD: Tensor,
    dead_LM: Tensor,
    encoder_scale: float = 0.2,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Re-initialise the dead features (`dead_LM`, bool [L, M]); return the count per layer.
    The sampling weights come from the SAE without training noise."""
    was_training = sae.training
    x_hat_BLD, _ = sae.eval()(x_BLD)
    sae.train(was_training)
    err_BL = (x_hat_BLD - x_BLD).pow(2).sum(-1)
    counts = []
    for j in range(dead_LM.shape[0]):
        dead_M = dead_LM[j].nonzero().flatten()
        counts.append(len(dead_M))
        if not len(dead_M):
            continue
        weights = err_BL[:, j].clamp_min(1e-12)
        tokens = torch.multinomial(weights, len(dead_M), replacement=True, generator=generator)
        direction_ND = x_BLD[tokens, j] - sae.b_dec_LD[j]
        direction_ND = direction_ND / direction_ND.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive_M = ~dead_LM[j]
        enc_norm, dec_norm = 1.0, 1.0
        if alive_M.any():
            enc_norm = sae.W_enc_LDM[j][:, alive_M].norm(dim=0).mean()
            dec_norm = sae.W_dec_LMD[j][alive_M].norm(dim=-1).mean()
        sae.W_dec_LMD[j, dead_M] = direction_ND * dec_norm
        sae.W_enc_LDM[j][:, dead_M] = (direction_ND * encoder_scale * enc_norm).T
        sae.b_enc_LM[j, dead_M] = 0.0
        _reset_state(optimizer, sae.W_dec_LMD, (j, dead_M))
        _reset_state(optimizer, sae.W_enc_LDM, (j, slice(None), dead_M))
        _reset_state(optimizer, sae.b_enc_LM, (j, dead_M))
    return counts


def broadcast_from_rank0(sae: torch.nn.Module) -> None:
    """Under DDP, make every rank's resampled weights rank 0's (each rank drew from its own
    batch; the dead mask, and so the optimizer-state reset, is already the same)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for param in (sae.W_enc_LDM, sae.W_dec_LMD, sae.b_enc_LM):
            dist.broadcast(param.data, src=0)


def _reset_state(optimizer: torch.optim.Optimizer, param: Tensor, index: tuple) -> None:
    """Zero the optimizer's per-element state (e.g. Adam's moments) at `index` of `param`."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value[index] = 0.0
