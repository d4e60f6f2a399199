"""`source=gpt2_small_shape`: GPT-2 small's architecture with random weights, built with no
network access; and a harvest at its real shapes."""

from __future__ import annotations

import socket

import pytest
import torch
from hydra import compose, initialize_config_dir

from nsae.config import CONF_DIR, asset
from nsae.data.source import Harvester, configured_source, random_source, transformer_blocks
from nsae.errors import NsaeError

# GPT-2 small's parameter count (tied input/output embeddings), in closed form:
# wte V*D + wpe P*D + per block (2 LayerNorms 4D, attention 4D^2 + 4D, MLP 8D^2 + 5D)
# + final LayerNorm 2D.
V, P, D, N_LAYERS = 50257, 1024, 768, 12
GPT2_SMALL_PARAMS = V * D + P * D + N_LAYERS * (12 * D * D + 13 * D) + 2 * D
SMALL = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 4096}


@pytest.fixture(scope="module")
def offline() -> None:
    """No network: the hub's offline switch, and any socket connection fails."""
    import huggingface_hub.constants as hub

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(hub, "HF_HUB_OFFLINE", True)

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("a network connection was attempted")

    mp.setattr(socket.socket, "connect", refuse)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def gpt2_small(offline: None) -> tuple[torch.nn.Module, object]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["source=gpt2_small_shape"])
    return configured_source(cfg.source)


def test_gpt2_small_shape_builds_gpt2_small_offline(gpt2_small) -> None:
    model, tok = gpt2_small
    assert type(model).__name__ == "GPT2LMHeadModel"
    blocks = transformer_blocks(model)
    assert len(blocks) == N_LAYERS
    assert model.config.hidden_size == D and model.config.n_positions == P
    assert sum(p.numel() for p in model.parameters()) == GPT2_SMALL_PARAMS == 124_439_808
    assert blocks[0].mlp.c_fc.weight.shape == (D, 4 * D)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert len(tok) <= V


def test_harvest_at_real_shapes_matches_the_hidden_states(gpt2_small) -> None:
    """Chosen layers [0, 5, 10]: [B, T, 3, 768], each the block's output (hidden_states[l+1];
    the last layer is left out because GPT-2's last hidden state has ln_f applied)."""
    model, _ = gpt2_small
    ids_BT = torch.randint(0, 4096, (2, 16), generator=torch.Generator().manual_seed(0))
    layers = [0, 5, 10]
    x_BTLD = Harvester(model, layers, "resid_post")(ids_BT)
    assert x_BTLD.shape == (2, 16, 3, D)
    with torch.no_grad():
        hidden = model(ids_BT, output_hidden_states=True).hidden_states
    for j, layer in enumerate(layers):
        torch.testing.assert_close(x_BTLD[:, :, j], hidden[layer + 1], rtol=0, atol=0)
    assert x_BTLD.flatten(0, 1).shape == (32, 3, D)  # the [N, L, D] rows training sees


def test_random_weights_are_a_function_of_the_seed_alone(offline: None) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, _ = random_source(SMALL, asset("kjv-gpt2"), seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    b, _ = random_source(SMALL, asset("kjv-gpt2"), seed=0)
    c, _ = random_source(SMALL, asset("kjv-gpt2"), seed=1)
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    # GPT-2's own initialisation: N(0, initializer_range = 0.02)
    assert abs(wa.std().item() - 0.02) < 0.002


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"init": "scratch", "name": "x"},
            "source.init='scratch'; valid: pretrained, random",
        ),
        (
            {"init": "random", "tokenizer": asset("kjv-gpt2"), "config": {"n_layer": 2}},
            "source.config.model_type=None is not a causal LM type; valid: one that "
            "AutoModelForCausalLM builds (gpt2, gpt_neox, llama, ...)",
        ),
        (
            {
                "init": "random",
                "tokenizer": asset("kjv-gpt2"),
                "config": {**SMALL, "vocab_size": 100},
            },
            "source.config.vocab_size=100 is smaller than the tokenizer's 4096 tokens; "
            "valid: vocab_size >= 4096",
        ),
    ],
)
def test_bad_random_sources_fail_in_one_line(source: dict, message: str) -> None:
    with pytest.raises(NsaeError) as err:
        configured_source(source)
    assert str(err.value) == message


def test_cache_fingerprint_of_a_random_source(tmp_path) -> None:
    """The activation cache's key sees the config, the seed and the tokenizer's files."""
    from nsae.data.fingerprint import model_fingerprint, source_fingerprint

    base = {"init": "random", "config": SMALL, "seed": 0, "tokenizer": asset("kjv-gpt2")}
    got = source_fingerprint(base, tmp_path)
    assert got["config"] == SMALL and got["seed"] == 0
    assert got["tokenizer"] == model_fingerprint(asset("kjv-gpt2"), tmp_path)
    assert source_fingerprint({**base, "seed": 1}, tmp_path) != got
    assert source_fingerprint({**base, "config": {**SMALL, "n_layer": 3}}, tmp_path) != got
    pretrained = {"name": asset("kjv-gpt2")}
    assert source_fingerprint(pretrained, tmp_path) == model_fingerprint(
        asset("kjv-gpt2"), tmp_path
    )
