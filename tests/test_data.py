"""Hook sites, harvesting, packing and the shuffle buffer, on real (small) HF models."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from nsae.data.buffer import ShuffleBuffer
from nsae.data.source import HOOK_SITES, Harvester, transformer_blocks
from nsae.data.text import packed_contexts
from nsae.errors import NsaeError

N_LAYERS = 3


def small_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    common = {
        "vocab_size": 101,
        "hidden_size": 32,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    }
    models = {
        "gpt2": GPT2LMHeadModel(
            GPT2Config(vocab_size=101, n_embd=32, n_layer=N_LAYERS, n_head=4, n_positions=64)
        ),
        "gpt_neox": GPTNeoXForCausalLM(GPTNeoXConfig(**common, max_position_embeddings=64)),
        "llama": LlamaForCausalLM(
            LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=64)
        ),
    }
    return {k: m.eval() for k, m in models.items()}


MODELS = small_models()
IDS = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(1))


def module_outputs(model: torch.nn.Module, site: str) -> list[torch.Tensor]:
    """Each block's attention or MLP output, read with plain forward hooks."""
    outs: list[torch.Tensor] = []
    for block in transformer_blocks(model):
        name = next(
            n
            for n in (("attn", "attention", "self_attn") if site == "attn_out" else ("mlp",))
            if hasattr(block, n)
        )
        getattr(block, name).register_forward_hook(
            lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o)
        )
    with torch.no_grad():
        model(IDS)
    for block in transformer_blocks(model):  # remove the hooks again
        for sub in block.children():
            sub._forward_hooks.clear()
    return outs


@pytest.mark.parametrize("family", list(MODELS))
def test_residual_sites_equal_hidden_states(family: str) -> None:
    model = MODELS[family]
    with torch.no_grad():
        hidden = model(IDS, output_hidden_states=True).hidden_states
    layers = list(range(N_LAYERS))
    pre = Harvester(model, layers, "resid_pre")(IDS)
    post = Harvester(model, layers, "resid_post")(IDS)
    for layer in layers:
        torch.testing.assert_close(pre[:, :, layer], hidden[layer], rtol=0, atol=0)
    # hidden_states[i + 1] is block i's output, except the last, which has the final norm.
    for layer in layers[:-1]:
        torch.testing.assert_close(post[:, :, layer], hidden[layer + 1], rtol=0, atol=0)
    assert not torch.allclose(post[:, :, -1], hidden[-1])


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("site", ["attn_out", "mlp_out"])
def test_module_sites_equal_module_outputs(family: str, site: str) -> None:
    model = MODELS[family]
    expected = module_outputs(model, site)
    got = Harvester(model, list(range(N_LAYERS)), site)(IDS)
    for layer in range(N_LAYERS):
        torch.testing.assert_close(got[:, :, layer], expected[layer], rtol=0, atol=0)


def test_forward_stops_after_last_needed_layer() -> None:
    model = MODELS["gpt2"]
    ran: list[int] = []
    blocks = transformer_blocks(model)
    handles = [
        b.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, b in enumerate(blocks)
    ]
    try:
        acts = Harvester(model, [0, 1], "resid_post")(IDS)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1] and acts.shape == (2, 10, 2, 32)


@pytest.mark.parametrize("family", list(MODELS))
def test_autocast_runs_the_forward_in_bfloat16(family: str) -> None:
    model = MODELS[family]
    exact = Harvester(model, [0, 1], "resid_post")(IDS)
    harvester = Harvester(model, [0, 1], "resid_post", autocast="bfloat16")
    cast = harvester(IDS)
    assert not torch.equal(cast.float(), exact)  # the matmuls really ran in bfloat16
    torch.testing.assert_close(cast.float(), exact, rtol=0.1, atol=0.1)
    assert harvester.logits(IDS).shape[:2] == IDS.shape


def test_bad_autocast_dtype() -> None:
    with pytest.raises(NsaeError, match=r"source\.autocast='int8'; valid: null, bfloat16, float16"):
        Harvester(MODELS["gpt2"], [0], "resid_post", autocast="int8")


def test_bad_site_and_layer() -> None:
    with pytest.raises(NsaeError, match="valid: resid_pre, resid_post, attn_out, mlp_out"):
        Harvester(MODELS["gpt2"], [0], "resid_mid")
    with pytest.raises(NsaeError, match=r"layer 5 is outside the model; valid: 0..2"):
        Harvester(MODELS["llama"], [5], "resid_post")
    assert set(HOOK_SITES) == {"resid_pre", "resid_post", "attn_out", "mlp_out"}


class _Tok:
    bos_token_id, eos_token_id = 0, 1

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [int(w) for w in text.split()]}


def test_packing_bos_first_and_eos_between_documents() -> None:
    rows = [{"text": "5 6 7"}, {"text": "8 9"}, {"input_ids": [10, 11, 12, 13]}]
    contexts = list(packed_contexts(rows, _Tok(), context_size=4))
    # stream: 5 6 7 EOS 8 9 EOS 10 11 12 13 EOS -> chunks of 3 after BOS
    assert [c.tolist() for c in contexts] == [
        [0, 5, 6, 7],
        [0, 1, 8, 9],
        [0, 1, 10, 11],
        [0, 12, 13, 1],
    ]


def test_rows_without_text_or_tokens_rejected() -> None:
    with pytest.raises(NsaeError, match=r"no text column 'text'.*columns: body"):
        list(packed_contexts([{"body": "x"}], _Tok(), 4))


def test_shuffle_buffer_mixes_contexts() -> None:
    """Same-context token pairs in a batch are at most 2x what uniform sampling gives."""
    T, n_ctx, capacity, batch = 32, 400, 4096, 256

    def chunks():  # each chunk: 8 contexts of T tokens, activation = the context id
        for start in range(0, n_ctx, 8):
            ids = torch.arange(start, start + 8).repeat_interleave(T)
            yield ids.float().view(-1, 1, 1)

    buffer = ShuffleBuffer(chunks(), capacity=capacity, batch_size=batch, seed=0)
    same, pairs = 0.0, 0
    it = iter(buffer)
    n_batches = 20
    for _ in range(n_batches):
        ctx = next(it).view(-1).long()
        counts = torch.bincount(ctx).double()
        same += (counts * (counts - 1)).sum().item() / 2
        pairs += batch * (batch - 1) // 2
    # Uniform sampling over a buffer of capacity/T contexts: P(same context) = T / capacity.
    uniform = (T - 1) / (capacity - 1)
    assert same / pairs <= 2 * uniform
    assert n_batches * batch > capacity  # the test went through at least one refill


def test_shuffle_buffer_serves_every_token_once_per_round() -> None:
    chunks = (torch.arange(i, i + 64).float().view(-1, 1, 1) for i in range(0, 10**6, 64))
    it = iter(ShuffleBuffer(chunks, capacity=512, batch_size=64, seed=0))
    first_round = torch.cat([next(it).view(-1) for _ in range(4)])  # half of 512
    assert len(set(first_round.tolist())) == 256 and first_round.max() < 512


def test_local_json_and_parquet_text_and_tokens(tmp_path) -> None:
    """The same `datasets` code path reads json and parquet files, text or pre-tokenized."""
    import datasets

    from nsae.data.text import load_rows

    datasets.Dataset.from_dict({"text": ["5 6 7", "8 9"]}).to_json(tmp_path / "t.jsonl")
    datasets.Dataset.from_dict({"tokens": [[5, 6, 7], [8, 9]]}).to_parquet(tmp_path / "t.pq")
    expected = [[0, 5, 6, 7], [0, 1, 8, 9]]
    for builder, name in (("json", "t.jsonl"), ("parquet", "t.pq")):
        rows = load_rows(builder, "train", {"train": str(tmp_path / name)})
        got = [c.tolist() for c in packed_contexts(rows, _Tok(), context_size=4)]
        assert got == expected, builder
    with pytest.raises(NsaeError, match=r"split 'eval' not in data\.data_files; valid: train"):
        load_rows("json", "eval", {"train": str(tmp_path / "t.jsonl")})


def test_ranks_harvest_disjoint_contexts(tmp_path) -> None:
    """With 2 ranks each takes a different half of the contexts; together, all of them."""
    from omegaconf import OmegaConf

    from nsae.data.contexts import ContextStream

    (tmp_path / "t.txt").write_text(
        "\n".join(" ".join(str(i * 10 + j) for j in range(7)) for i in range(40))
    )
    data = OmegaConf.create(
        {"path": "text", "data_files": {"train": str(tmp_path / "t.txt")}, "context_size": 8}
    )
    every = [tuple(c.tolist()) for c in ContextStream(data, "train", _Tok(), repeat=False)]
    shards = [
        [tuple(c.tolist()) for c in ContextStream(data, "train", _Tok(), False, r, 2)]
        for r in (0, 1)
    ]
    assert len(every) >= 30
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(every)
