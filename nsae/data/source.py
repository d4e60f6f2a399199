"""Source language models: loading, hook sites, and harvesting activations.

A source is loaded by hub name or local directory (`init: pretrained`), or built with
random weights from a known architecture's config (`init: random`, e.g.
`source=gpt2_small_shape`: real shapes with nothing downloaded). One forward pass collects
a hook site of every chosen layer, and stops right after the last layer it needs. Block
lists and submodule names are resolved per architecture family, so any Hugging Face causal
LM of a known family works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from nsae.errors import NsaeError

HOOK_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
# Where each family keeps its transformer blocks, and the names of their submodules.
_BLOCK_PATHS = ("transformer.h", "gpt_neox.layers", "model.layers", "model.decoder.layers")
_ATTN_NAMES = ("attn", "attention", "self_attn")
_MLP_NAMES = ("mlp", "feed_forward")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INITS = ("pretrained", "random")


def load_source(name: str, dtype: str = "float32") -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer by hub name or local path, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=_DTYPES[dtype])
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(name)


def check_dtype(dtype: str) -> None:
    if dtype not in _DTYPES:
        raise NsaeError(f"source.dtype={dtype!r}; valid: {', '.join(_DTYPES)}")


def model_config(kwargs: Mapping[str, Any]) -> Any:
    """A Hugging Face model config built from `source.config`: `model_type` (gpt2, llama,
    ...) plus that family's keys (gpt2: n_layer, n_embd, n_head, n_positions, vocab_size)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kwargs = dict(kwargs or {})
    model_type = kwargs.pop("model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise NsaeError(
            f"source.config.model_type={model_type!r} is not a causal LM type; valid: one "
            "that AutoModelForCausalLM builds (gpt2, gpt_neox, llama, ...)"
        )
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except (TypeError, ValueError) as err:
        raise NsaeError(f"source.config: {str(err).splitlines()[0]}") from None


def random_source(
    config: Mapping[str, Any], tokenizer: str, dtype: str = "float32", seed: int = 0
) -> tuple[nn.Module, object]:
    """A randomly initialised causal LM of a known architecture (the family's own
    initialisation, drawn from a generator seeded with `seed`; the global RNG is left as
    it was), in eval mode, and the tokenizer at `tokenizer`. Nothing is downloaded: real
    shapes for benchmarks and tests. The tokenizer's ids must fit the model's vocabulary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_dtype(dtype)
    model_cfg = model_config(config)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    if len(tok) > model_cfg.vocab_size:
        raise NsaeError(
            f"source.config.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
            f"{len(tok)} tokens; valid: vocab_size >= {len(tok)}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model_cfg, dtype=_DTYPES[dtype])
    model.eval().requires_grad_(False)
    return model, tok


def configured_source(source: Mapping[str, Any]) -> tuple[nn.Module, object]:
    """The LM and tokenizer a `source` config names: `init: pretrained` (the default) loads
    `name`; `init: random` builds `config` with `seed`, and the tokenizer at `tokenizer`."""
    init, dtype = source.get("init", "pretrained"), source.get("dtype", "float32")
    if init == "pretrained":
        return load_source(str(source["name"]), dtype)
    if init == "random":
        return random_source(
            source["config"], str(source["tokenizer"]), dtype, int(source.get("seed", 0))
        )
    raise NsaeError(f"source.init={init!r}; valid: {', '.join(INITS)}")


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    for path in _BLOCK_PATHS:
        module: nn.Module | None = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise NsaeError(
        f"cannot find the transformer blocks of {type(model).__name__}; "
        f"known layouts: {', '.join(_BLOCK_PATHS)}"
    )


def _child(block: nn.Module, names: tuple[str, ...], what: str) -> nn.Module:
    for name in names:
        if hasattr(block, name):
            return getattr(block, name)
    raise NsaeError(f"no {what} module in {type(block).__name__}; looked for {', '.join(names)}")


def _first(output: object) -> Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward pass early."""


@dataclass
class HookPoint:
    """Where one layer's activation is read: a module, and its input or its output."""

    module: nn.Module
    reads_input: bool

    def read(self, save: Callable[[Tensor], None]) -> RemovableHandle:
        """Call `save(activation)` on every forward."""
        return self.replace(lambda a: save(a) or a)

    def replace(self, fn: Callable[[Tensor], Tensor]) -> RemovableHandle:
        """Substitute `fn(activation)` for the activation on every forward."""
        if self.reads_input:

            def pre(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                if args:
                    return (fn(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

            return self.module.register_forward_pre_hook(pre, with_kwargs=True)

        def post(_m: nn.Module, _args: tuple, out: Any) -> Any:
            return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

        return self.module.register_forward_hook(post)


def hook_point(model: nn.Module, layer: int, site: str) -> HookPoint:
    blocks = transformer_blocks(model)
    if site not in HOOK_SITES:
        raise NsaeError(f"source.hook_site={site!r}; valid: {', '.join(HOOK_SITES)}")
    if not 0 <= layer < len(blocks):
        raise NsaeError(f"layer {layer} is outside the model; valid: 0..{len(blocks) - 1}")
    block = blocks[layer]
    if site == "resid_pre":
        return HookPoint(block, reads_input=True)
    if site == "resid_post":
        return HookPoint(block, reads_input=False)
    names, what = (_ATTN_NAMES, "attention") if site == "attn_out" else (_MLP_NAMES, "MLP")
    return HookPoint(_child(block, names, what), reads_input=False)


class Harvester:
    """Collects one hook site of several layers in a single, early-stopped forward pass."""

    def __init__(
        self, model: nn.Module, layers: list[int], site: str, autocast: str | None = None
    ) -> None:
        """`autocast`: run the LM's forward under torch.autocast in this dtype (bfloat16
        on a GPU), or None for the model's own dtype."""
        if autocast is not None and autocast not in ("bfloat16", "float16"):
            raise NsaeError(f"source.autocast={autocast!r}; valid: null, bfloat16, float16")
        self.model, self.layers, self.site = model, list(layers), site
        self.autocast = None if autocast is None else _DTYPES[autocast]
        self.points = [hook_point(model, layer, site) for layer in self.layers]

    def _precision(self, ids: Tensor) -> AbstractContextManager:
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(device_type=ids.device.type, dtype=self.autocast)

    @torch.no_grad()
    def __call__(self, input_ids_BT: Tensor) -> Tensor:
        """Activations of every chosen layer, shaped [B, T, L, D]."""
        store: dict[int, Tensor] = {}

        def saver(i: int) -> Callable[[Tensor], None]:
            def save(a: Tensor) -> None:
                store[i] = a
                if len(store) == len(self.points):
                    raise _StopForward

            return save

        handles = [p.read(saver(i)) for i, p in enumerate(self.points)]
        try:
            with suppress(_StopForward), self._precision(input_ids_BT):
                self.model(input_ids_BT, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return torch.stack([store[i] for i in range(len(self.points))], dim=2)

    @torch.no_grad()
    def logits(
        self,
        input_ids_BT: Tensor,
        layer_index: int | None = None,
        fn: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The model's logits, with `fn` applied to one chosen layer's activation (if given)."""
        handle = None if fn is None else self.points[layer_index].replace(fn)  # type: ignore[index]
        try:
            with self._precision(input_ids_BT):
                return self.model(input_ids_BT, use_cache=False).logits
        finally:
            if handle is not None:
                handle.remove()
