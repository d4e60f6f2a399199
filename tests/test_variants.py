"""The SAE variants against closed forms: hand-worked examples and independent torch math."""

from __future__ import annotations

import math
import re

import pytest
import torch

from nsae.loss import SAELoss
from nsae.saes import SAE, build_sae
from nsae.saes.topk import sparse_decode


def set_params(sae: SAE, **values: list) -> SAE:
    with torch.no_grad():
        for name, value in values.items():
            getattr(sae, name).copy_(torch.tensor(value, dtype=torch.float32))
    return sae


def pre_by_hand(sae: SAE, x_BLD: torch.Tensor) -> torch.Tensor:
    """W_e (x - b_d) + b_e per layer with einsum (independent of the bank's bmm)."""
    x_c = x_BLD - sae.b_dec_LD
    return torch.einsum("bld,ldm->blm", x_c, sae.W_enc_LDM) + sae.b_enc_LM


# -- TopK ------------------------------------------------------------------------------------
def test_topk_keeps_at_most_k_and_exactly_k_where_the_kth_is_positive() -> None:
    torch.manual_seed(0)
    k = 3
    sae = build_sae("topk", 2, 6, 10, k=k)
    with torch.no_grad():
        sae.b_enc_LM.fill_(-0.8)  # many tokens have fewer than k positive pre-activations
    x = torch.randn(200, 2, 6)
    pre = pre_by_hand(sae, x)
    n_pos = (pre > 0).sum(-1)
    assert (n_pos < k).any() and (n_pos >= k).any()
    for f in (sae.train_forward(x).f_BLM, sae.eval()(x)[1]):
        l0 = (f > 0).sum(-1)
        torch.testing.assert_close(l0, n_pos.clamp(max=k))
        kth = pre.topk(k, dim=-1).values[..., -1:]
        torch.testing.assert_close(f, torch.where(pre >= kth, pre.relu(), 0.0).detach())


def test_sparse_decode_equals_the_dense_product_with_gradients() -> None:
    torch.manual_seed(1)
    B, L, M, D, N = 5, 3, 12, 4, 40
    W = torch.randn(L, M, D, requires_grad=True)
    b, ly, m = torch.randint(0, B, (N,)), torch.randint(0, L, (N,)), torch.randint(0, M, (N,))
    v = torch.randn(N, requires_grad=True)
    sparse = sparse_decode(W, b * L + ly, m, v, B)
    f = torch.zeros(B, L, M).index_put((b, ly, m), v, accumulate=True)
    dense = torch.einsum("blm,lmd->bld", f, W)
    torch.testing.assert_close(sparse, dense)
    g = torch.randn(B, L, D)
    gW_s, gv_s = torch.autograd.grad((sparse * g).sum(), (W, v))
    gW_d, gv_d = torch.autograd.grad((dense * g).sum(), (W, v))
    torch.testing.assert_close(gW_s, gW_d)
    torch.testing.assert_close(gv_s, gv_d)


def test_topk_reconstruction_is_the_dense_decode() -> None:
    torch.manual_seed(2)
    sae = build_sae("topk", 2, 6, 16, k=4)
    x = torch.randn(32, 2, 6)
    out = sae.train_forward(x)
    torch.testing.assert_close(out.x_hat_BLD, SAE.decode(sae, out.f_BLM))


def test_auxk_by_hand() -> None:
    """Step 1 fires some features; on step 2 the others are dead (dead_steps=1) and AuxK
    reconstructs step 2's residual from the k_aux largest dead pre-activations."""
    torch.manual_seed(3)
    k, k_aux, coeff, M = 2, 3, 0.5, 12
    sae = build_sae("topk", 1, 5, M, k=k, k_aux=k_aux, aux_coeff=coeff, dead_steps=1)
    x1, x2 = torch.randn(4, 1, 5), torch.randn(6, 1, 5)
    first = sae.train_forward(x1)
    assert first.aux_sq_err_BL is None  # no feature can be dead before dead_steps steps
    dead = ~first.fired_LM[0]
    out = sae.train_forward(x2)
    pre = pre_by_hand(sae, x2)[:, 0].detach()
    e = x2[:, 0] - out.x_hat_BLD[:, 0].detach()
    masked = torch.where(dead, pre, -math.inf)
    vals, idx = masked.topk(k_aux, dim=-1)
    e_hat = torch.einsum("bk,bkd->bd", vals.relu(), sae.W_dec_LMD[0][idx])
    scale = min(dead.sum().item() / k_aux, 1.0)
    expected = coeff * scale * (e - e_hat).pow(2).sum(-1)
    torch.testing.assert_close(out.aux_sq_err_BL[:, 0], expected.detach())
    assert sae.steps_since_fired_LM[0].tolist() == [
        0 if a else (1 if b else 2) for a, b in zip(out.fired_LM[0], first.fired_LM[0], strict=True)
    ]
    resumed = build_sae("topk", 1, 5, M, k=k, k_aux=k_aux, aux_coeff=coeff, dead_steps=1)
    resumed.load_state_dict(sae.state_dict())  # a checkpoint keeps the step count and buffer
    assert resumed.train_steps == 2
    assert torch.equal(resumed.steps_since_fired_LM, sae.steps_since_fired_LM)


# -- BatchTopK -------------------------------------------------------------------------------
def test_batchtopk_training_averages_exactly_k_and_eval_uses_the_threshold() -> None:
    torch.manual_seed(4)
    B, L, M, k, lr = 8, 2, 16, 3, 0.5
    sae = build_sae("batchtopk", L, 6, M, k=k, threshold_lr=lr)
    with torch.no_grad():
        sae.b_enc_LM.fill_(3.0)  # every pre-activation positive
    x = torch.randn(B, L, 6)
    pre = pre_by_hand(sae, x).detach()
    f = sae.train_forward(x).f_BLM.detach()
    torch.testing.assert_close((f > 0).sum(-1).float().mean(0), torch.full((L,), float(k)))
    for layer in range(L):
        kept = pre[:, layer].flatten().topk(k * B).values
        torch.testing.assert_close(
            f[:, layer].flatten().sort().values[-k * B :], kept.sort().values
        )
        assert sae.threshold_L[layer].item() == pytest.approx(kept.min().item())  # first step
    theta_1 = sae.threshold_L.clone()
    f2 = sae.train_forward(torch.randn(B, L, 6)).f_BLM.detach()
    min_2 = torch.where(f2 > 0, f2, math.inf).amin((0, 2))  # later steps: the EMA
    torch.testing.assert_close(sae.threshold_L, (1 - lr) * theta_1 + lr * min_2)
    sae.eval()
    x_eval = torch.randn(50, L, 6)
    pre_eval = pre_by_hand(sae, x_eval).detach()
    f_eval = sae(x_eval)[1]
    expected = torch.where(pre_eval > sae.threshold_L[:, None], pre_eval.relu(), 0.0)
    torch.testing.assert_close(f_eval, expected)
    assert (f_eval > 0).sum(-1).unique().numel() > 1  # one token's L0 varies


# -- JumpReLU --------------------------------------------------------------------------------
def test_jumprelu_ste_gradients_by_hand() -> None:
    """pre = x (W_e = I, biases 0). theta = [1, 1.2, 0.5], eps = 0.5.
    Token 1, x = [0.9, 1.22, 3]: u = (z - theta)/eps = [-0.2, 0.04, 5] -> K = [1, 1, 0],
      H = [0, 1, 1], f = [0, 1.22, 3]. d(sum f)/dtheta = -(theta/eps) K = [-2, -2.4, 0],
      dL0/dtheta = -(1/eps) K = [-2, -2, 0]; d/dz = H.
    Token 2, x = [1.1, 0, 0]: u = [0.2, -2.4, -1] -> K = [1, 0, 0], H = [1, 0, 0]:
      d/dtheta = [-2 - 2, 0, 0]. Sum: dtheta = [-8, -4.4, 0]; dlog_theta = theta dtheta."""
    sae = build_sae("jumprelu", 1, 3, 3, bandwidth=0.5)
    theta = [1.0, 1.2, 0.5]
    set_params(
        sae, W_enc_LDM=[torch.eye(3).tolist()], log_threshold_LM=[[math.log(t) for t in theta]]
    )
    x = torch.tensor([[[0.9, 1.22, 3.0]], [[1.1, 0.0, 0.0]]])
    out = sae.train_forward(x)
    torch.testing.assert_close(out.f_BLM[:, 0], torch.tensor([[0, 1.22, 3.0], [1.1, 0, 0]]))
    torch.testing.assert_close(out.sparsity_BL[:, 0], torch.tensor([2.0, 1.0]))
    (out.f_BLM.sum() + out.sparsity_BL.sum()).backward()
    d_theta = torch.tensor([-8.0, -4.4, 0.0])
    torch.testing.assert_close(sae.log_threshold_LM.grad[0], d_theta * torch.tensor(theta))
    torch.testing.assert_close(sae.b_enc_LM.grad[0], torch.tensor([1.0, 1.0, 1.0]))  # sum of H
    assert sae.sparsity_scaling == "bounded"  # L0 does not scale with the input


# -- Gated -----------------------------------------------------------------------------------
def test_gated_equals_the_paper_by_hand() -> None:
    """W_gate = I, b_gate = [0, -1], r_mag = [0, ln 2], b_mag = [0.5, 0], b_dec = 0,
    W_dec rows [1, 0], [0, 2] (norms 1, 2).
    x = [2, 3]:    pi_gate = [2, 2], pi_mag = [2.5, 6] -> f = [2.5, 6], x_hat = [2.5, 12];
                   sparsity = 2*1 + 2*2 = 6; x_hat_frozen(ReLU(pi_gate)) = [2, 4] -> aux = 1.
    x = [-1, .5]:  pi_gate = [-1, -0.5] -> f = 0, x_hat = 0; sparsity 0; aux = 1.25."""
    sae = build_sae("gated", 1, 2, 2)
    set_params(
        sae,
        W_enc_LDM=[[[1.0, 0.0], [0.0, 1.0]]],
        b_gate_LM=[[0.0, -1.0]],
        r_mag_LM=[[0.0, math.log(2.0)]],
        b_mag_LM=[[0.5, 0.0]],
        W_dec_LMD=[[[1.0, 0.0], [0.0, 2.0]]],
    )
    x = torch.tensor([[[2.0, 3.0]], [[-1.0, 0.5]]])
    out = sae.train_forward(x)
    torch.testing.assert_close(out.f_BLM[:, 0], torch.tensor([[2.5, 6.0], [0.0, 0.0]]))
    torch.testing.assert_close(out.x_hat_BLD[:, 0], torch.tensor([[2.5, 12.0], [0.0, 0.0]]))
    torch.testing.assert_close(out.sparsity_BL[:, 0], torch.tensor([6.0, 0.0]))
    torch.testing.assert_close(out.aux_sq_err_BL[:, 0], torch.tensor([1.0, 1.25]))
    torch.testing.assert_close(sae.eval()(x)[1], out.f_BLM.detach())
    out.aux_sq_err_BL.sum().backward()  # the auxiliary path: frozen decoder, live gate
    assert sae.W_dec_LMD.grad is None and sae.W_enc_LDM.grad.abs().sum() > 0


# -- Matryoshka ------------------------------------------------------------------------------
@pytest.mark.parametrize("p", ["none", "input_norm"])
def test_matryoshka_loss_is_the_sum_of_each_prefix_computed_separately(p: str) -> None:
    torch.manual_seed(5)
    B, L, D, M = 16, 2, 5, 8
    sae = build_sae("matryoshka", L, D, M, k=3, prefixes=[0.25, 4])
    assert sae.prefix_sizes == [2, 4, 8]
    x = torch.randn(B, L, D)
    out = sae.train_forward(x)
    f = out.f_BLM.detach()
    norm = x.norm(dim=-1) ** (1 if p == "input_norm" else 0)
    total = torch.tensor(0.0)
    for size in (2, 4, 8):
        x_hat = torch.einsum("blm,lmd->bld", f[..., :size], sae.W_dec_LMD[:, :size]) + sae.b_dec_LD
        total += ((x - x_hat).pow(2).sum(-1) / norm).mean(0).sum()
    parts = SAELoss(p, torch.full((L,), 7.0))(x, out)  # no sparsity coefficient: 7 unused
    assert parts.total.item() == pytest.approx(total.item(), rel=1e-5)


# -- decoder-norm L1 weighting ---------------------------------------------------------------
@pytest.mark.parametrize("sae_type", ["none", "normalized_sae"])
def test_l1_decoder_norm_weighting(sae_type: str) -> None:
    torch.manual_seed(6)
    kw = {"noise_std": 0.0} if sae_type == "normalized_sae" else {}
    sae = build_sae(sae_type, 2, 4, 8, l1_weighting="decoder_norm", **kw)
    with torch.no_grad():
        sae.W_dec_LMD.mul_(torch.rand(2, 8, 1) * 3)
    out = sae.train_forward(torch.randn(10, 2, 4))
    norms = torch.linalg.vector_norm(sae.W_dec_LMD, dim=-1)
    torch.testing.assert_close(out.sparsity_BL, (out.f_BLM.abs() * norms).sum(-1))
    before = sae.W_dec_LMD.detach().clone()
    sae.after_optimizer_step()  # free decoder: not renormalised
    torch.testing.assert_close(sae.W_dec_LMD, before)
    assert sae.sparsity_scaling == "proportional"


def test_bad_hyperparameters_name_the_valid_range() -> None:
    with pytest.raises(ValueError, match=re.escape("sae.k=0; valid: an integer in 1..8")):
        build_sae("topk", 1, 2, 8, k=0)
    with pytest.raises(
        ValueError, match=re.escape("sae.l1_weighting='l2'; valid: none, decoder_norm")
    ):
        build_sae("none", 1, 2, 8, l1_weighting="l2")
    with pytest.raises(ValueError, match=re.escape("sae.prefixes=[0.5, 0.25]")):
        build_sae("matryoshka", 1, 2, 8, k=2, prefixes=[0.5, 0.25])
    with pytest.raises(ValueError, match=re.escape("sae.bandwidth=0; valid: > 0")):
        build_sae("jumprelu", 1, 2, 8, bandwidth=0)
