"""SAE variants against values worked out by hand for tiny hand-set weights."""

from __future__ import annotations

import math

import pytest
import torch

from nsae.saes import SAE, build_sae

# One layer, D=2, M=2. By hand, for x = [3, 1] and x = [1, 0]:
#   x - b_dec = [2, 1] and [0, 0]; pre = (x - b_dec) @ W_enc + b_enc = [2, -0.5] and [0, 0.5]
#   standard:   f = [2, 0], [0, 0.5];  x_hat = f @ W_dec + b_dec = [2.2, 1.6], [1.5, 0]
#   normalized: f = [tanh 2, 0], [0, tanh 0.5]
W_ENC = [[1.0, 0.0], [0.0, -1.0]]
B_ENC = [0.0, 0.5]
W_DEC = [[0.6, 0.8], [1.0, 0.0]]
B_DEC = [1.0, 0.0]
X = torch.tensor([[[3.0, 1.0]], [[1.0, 0.0]]])  # [B=2, L=1, D=2]


def hand_set(sae_type: str, **kw: float) -> SAE:
    sae = build_sae(sae_type, 1, 2, 2, **kw)
    with torch.no_grad():
        sae.W_enc_LDM.copy_(torch.tensor([W_ENC]))
        sae.b_enc_LM.copy_(torch.tensor([B_ENC]))
        sae.W_dec_LMD.copy_(torch.tensor([W_DEC]))
        sae.b_dec_LD.copy_(torch.tensor([B_DEC]))
    return sae.eval()


def test_standard_forward_by_hand() -> None:
    x_hat, f = hand_set("none")(X)
    torch.testing.assert_close(f[:, 0], torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
    torch.testing.assert_close(x_hat[:, 0], torch.tensor([[2.2, 1.6], [1.5, 0.0]]))


def test_normalized_forward_by_hand() -> None:
    x_hat, f = hand_set("normalized_sae", noise_std=0.3)(X)
    t2, t05 = math.tanh(2.0), math.tanh(0.5)
    torch.testing.assert_close(f[:, 0], torch.tensor([[t2, 0.0], [0.0, t05]]))
    expected = torch.tensor([[1 + 0.6 * t2, 0.8 * t2], [1 + t05, 0.0]])
    torch.testing.assert_close(x_hat[:, 0], expected)


def test_encode_decode_compose_to_forward() -> None:
    sae = build_sae("none", 3, 8, 16).eval()
    x = torch.randn(5, 3, 8)
    x_hat, f = sae(x)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat)
    assert f.shape == (5, 3, 16) and x_hat.shape == (5, 3, 8)


def test_layers_are_independent_saes() -> None:
    """Layer l of the bank equals a one-layer SAE holding layer l's weights."""
    bank = build_sae("none", 3, 4, 6).eval()
    x = torch.randn(7, 3, 4)
    x_hat, f = bank(x)
    for layer in range(3):
        single = build_sae("none", 1, 4, 6).eval()
        single.load_state_dict({k: v[layer : layer + 1] for k, v in bank.state_dict().items()})
        xs_hat, fs = single(x[:, layer : layer + 1])
        torch.testing.assert_close(xs_hat[:, 0], x_hat[:, layer])
        torch.testing.assert_close(fs[:, 0], f[:, layer])


def test_decoder_rows_unit_norm_after_steps() -> None:
    torch.manual_seed(0)
    sae = build_sae("none", 2, 8, 32)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(5):
        x = torch.randn(64, 2, 8) * 5
        x_hat, f = sae(x)
        ((x_hat - x).pow(2).sum(-1).mean() + f.sum(-1).mean()).backward()
        sae.before_optimizer_step()
        opt.step()
        opt.zero_grad()
        sae.after_optimizer_step()
        norms = sae.W_dec_LMD.norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_projection_removes_parallel_gradient() -> None:
    sae = build_sae("none", 1, 3, 2)
    with torch.no_grad():
        sae.W_dec_LMD.copy_(torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]]))
    sae.W_dec_LMD.grad = torch.tensor([[[2.0, 3.0, -1.0], [1.0, 1.0, 1.0]]])
    sae.before_optimizer_step()
    # Row 0: remove the x-component. Row 1: g.w = 1.4, so g - 1.4 w = [1, 0.16, -0.12].
    expected = torch.tensor([[[0.0, 3.0, -1.0], [1.0, 0.16, -0.12]]])
    torch.testing.assert_close(sae.W_dec_LMD.grad, expected)


def test_normalized_decoder_is_unconstrained() -> None:
    sae = hand_set("normalized_sae", noise_std=0.1)
    with torch.no_grad():
        sae.W_dec_LMD.mul_(3.0)
    sae.after_optimizer_step()
    assert sae.W_dec_LMD.norm(dim=-1).max() > 2.9


def test_noise_on_in_train_off_in_eval() -> None:
    torch.manual_seed(0)
    sae = build_sae("normalized_sae", 2, 8, 16, noise_std=0.5)
    x = torch.randn(32, 2, 8)
    sae.train()
    a, b = sae.encode(x), sae.encode(x)
    assert not torch.equal(a, b)
    sae.eval()
    c, d = sae.encode(x), sae.encode(x)
    assert torch.equal(c, d)
    torch.testing.assert_close(c, torch.tanh(torch.relu(sae.pre_activation(x))))


def test_standard_sae_has_no_noise() -> None:
    sae = build_sae("none", 1, 4, 8).train()
    x = torch.randn(16, 1, 4)
    assert torch.equal(sae.encode(x), sae.encode(x))


def test_init_scale_is_per_layer_2d() -> None:
    """The fan-in is that of one layer's [D, M] matrix, whatever the number of layers."""
    torch.manual_seed(0)
    for n_layers in (1, 12):
        sae = build_sae("none", n_layers, 64, 256)
        bound = 1 / math.sqrt(64)
        assert sae.W_enc_LDM.abs().max() <= bound
        assert sae.W_enc_LDM.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_b_dec_init_mean_and_geometric_median() -> None:
    sae = build_sae("none", 2, 2, 4)
    x = torch.tensor(
        [
            [[0.0, 0.0], [1.0, 1.0]],
            [[1.0, 0.0], [1.0, 1.0]],
            [[0.0, 1.0], [1.0, 1.0]],
            [[10.0, 10.0], [1.0, 1.0]],
        ]
    )
    sae.init_b_dec(x, "mean")
    torch.testing.assert_close(sae.b_dec_LD, torch.tensor([[2.75, 2.75], [1.0, 1.0]]))
    sae.init_b_dec(x, "geometric_median")
    # The outlier at (10, 10) pulls the mean far more than the geometric median.
    assert sae.b_dec_LD[0].norm() < 1.0
    torch.testing.assert_close(sae.b_dec_LD[1], torch.tensor([1.0, 1.0]))


def test_unknown_sae_type_names_the_options() -> None:
    valid = "batchtopk, gated, jumprelu, matryoshka, none, normalized_sae, topk"
    with pytest.raises(ValueError, match=f"valid: {valid}$"):
        build_sae("foo", 1, 2, 2)


def test_negative_noise_std_rejected() -> None:
    with pytest.raises(ValueError, match="noise_std"):
        build_sae("normalized_sae", 1, 2, 2, noise_std=-0.1)
