"""What `python -m nsae.features` reads: a run directory (its `config.yaml` and `layer_<i>/`
exports) or one SAELens-format layer folder, the SAE of each layer, and the source and data
configs that rebuild the tokens the run was evaluated on.

A run's config.yaml holds absolute paths of the checkout that trained it; a path into some
checkout's `nsae/assets/` that does not exist here (and any `embedded:<name>`) is read from
this checkout's assets, so a run moved between machines still finds its model and text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nsae.constants import CONF_DIR
from nsae.errors import NsaeError
from nsae.export import HOOK_NAMES
from nsae.rundir import relocate
from nsae.saes import SAE, build_sae

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
_SITES = {v: k for k, v in HOOK_NAMES.items()}  # hook_resid_post -> resid_post
# SAELens architectures as nsae variants (eval-mode encode is all that is needed here)
_LENS_TYPES = {"standard": "none", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
NO_CACHE = {"cache_dir": None}  # read only: no file digests written beside a cache


@dataclass
class RunRef:
    """One run (or one layer folder) as this command reads it."""

    path: Path
    layers: dict[int, Path]  # layer index -> its export folder
    cfgs: dict[int, dict[str, Any]]  # layer index -> its cfg.json
    config: DictConfig | None = None  # the run's config.yaml (asset paths relocated)
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> dict[str, Any]:
        return next(iter(self.cfgs.values()))

    @property
    def model_name(self) -> str:
        return str(self.first.get("model_name", "?"))

    @property
    def hook_site(self) -> str:
        nsae_cfg = self.first.get("nsae") or {}
        if "hook_site" in nsae_cfg:
            return str(nsae_cfg["hook_site"])
        hook = str(self.first.get("hook_name", "")).rpartition(".")[2]
        return _SITES.get(hook, hook or "resid_post")

    @property
    def synthetic(self) -> bool:
        return self.config is not None and self.config.source.get("kind", "lm") == "synthetic"


def _layer_of(folder: Path, cfg: dict[str, Any]) -> int:
    if isinstance(cfg.get("hook_layer"), int):
        return int(cfg["hook_layer"])
    found = re.search(r"blocks\.(\d+)\.", str(cfg.get("hook_name", ""))) or re.search(
        r"layer_(\d+)$", folder.name
    )
    if found is None:
        raise NsaeError(f"{folder / CFG} names no layer (hook_layer or hook_name blocks.<i>.)")
    return int(found.group(1))


def _read_cfg(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / CFG).read_text())
    except (OSError, ValueError) as err:
        raise NsaeError(f"cannot read {folder / CFG}: {err}") from None


def open_run(path: Path, label: str = "") -> RunRef:
    """A run directory (layer_<i>/ folders, config.yaml) or a single layer folder."""
    if not path.exists():
        raise NsaeError(f"run directory not found: {path}")
    if not path.is_dir():
        raise NsaeError(f"not a directory: {path}; valid: a run directory or a layer folder")
    if (path / CFG).is_file():  # one layer folder (an nsae export or SAELens' own)
        folders = [path]
        config_file = path.parent / "config.yaml"
    else:
        folders = sorted(p for p in path.glob("layer_*") if (p / CFG).is_file())
        config_file = path / "config.yaml"
    if not folders:
        raise NsaeError(
            f"no layer folders in {path} (layer_<i>/cfg.json); valid: a finished run's "
            "directory or one SAELens-format layer folder"
        )
    read = [(f, _read_cfg(f)) for f in folders]
    cfgs = {_layer_of(f, c): c for f, c in read}
    layers = {_layer_of(f, c): f for f, c in read}
    config = None
    if config_file.is_file():
        raw = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        config = OmegaConf.create(relocate(raw))
    return RunRef(path, dict(sorted(layers.items())), cfgs, config, label or path.name)


def parse_layers(text: str) -> list[int]:
    try:
        layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise NsaeError(
            f"--layers={text!r}; valid: comma-separated layer indices, e.g. 0,2"
        ) from None
    if not layers:
        raise NsaeError("--layers is empty; valid: comma-separated layer indices, e.g. 0,2")
    return layers


def select_layers(run: RunRef, wanted: list[int] | None) -> list[int]:
    """The layers to show: all of the run's, or `wanted` (each must be in the run)."""
    if wanted is None:
        return list(run.layers)
    missing = [i for i in wanted if i not in run.layers]
    if missing:
        have = ", ".join(map(str, run.layers))
        raise NsaeError(f"layer {missing[0]} is not in {run.path}; valid: {have}")
    return wanted


def load_layer(run: RunRef, layer: int) -> SAE:
    """Layer `layer`'s SAE in eval mode: `nsae.load` for nsae exports, else the SAELens
    architecture's nsae counterpart (standard, topk, jumprelu, gated, normalized_sae)."""
    from safetensors.torch import load_file

    from nsae.export import load

    folder, cfg = run.layers[layer], run.cfgs[layer]
    if "nsae" in cfg:
        return load(folder)
    arch = str(cfg.get("architecture", "standard"))
    if arch not in {*_LENS_TYPES, "normalized_sae"}:
        raise NsaeError(
            f"{folder / CFG}: architecture {arch!r}; valid: {', '.join(_LENS_TYPES)}, "
            "normalized_sae"
        )
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise NsaeError(f"{folder / CFG}: normalize_activations must be 'none'")
    hparams: dict[str, Any] = {"k": int(cfg["k"])} if arch == "topk" else {}
    if arch == "standard":
        hparams = {"l1_weighting": "decoder_norm"}  # no unit-norm constraint on loading
    if arch == "normalized_sae":
        hparams = {"noise_std": 0.0}
    sae = build_sae(_LENS_TYPES.get(arch, arch), 1, int(cfg["d_in"]), int(cfg["d_sae"]), **hparams)
    sae.load_layer_state(0, load_file(str(folder / WEIGHTS)))
    return sae.eval()


def source_and_data(run: RunRef, model: str | None) -> tuple[DictConfig, DictConfig]:
    """The `source` and `data` configs that rebuild the run's tokens: the run's own (with
    `model` in place of the source's name if given); for a bare layer folder, `model` (or
    the folder's model_name when it is a local path or `embedded:`) on the embedded data."""
    import nsae.config  # noqa: F401  (registers the ${nsae.asset:...} resolver)

    if run.config is not None:
        source, data = run.config.source, OmegaConf.merge(run.config.data, NO_CACHE)
        if model is not None:
            source = OmegaConf.merge(source, {"name": model, "init": "pretrained"})
        return source, data
    name = model or relocate(run.model_name)
    if model is None and not Path(name).exists():
        raise NsaeError(
            f"{run.path} names model {run.model_name!r}, not a local model; pass --model "
            "with the source model's local path or hub name"
        )
    source = OmegaConf.create({"kind": "lm", "name": name, "hook_site": run.hook_site})
    data = OmegaConf.merge(OmegaConf.load(CONF_DIR / "data" / "kjv.yaml"), NO_CACHE)
    OmegaConf.resolve(data)
    return source, data


def check_comparable(a: RunRef, b: RunRef, layers: list[int]) -> None:
    """--compare: the same source model and hook site, each layer in both, the same d_in."""
    if a.model_name != b.model_name:
        raise NsaeError(
            f"--compare needs the same source model: {a.path} has {a.model_name!r}, "
            f"{b.path} has {b.model_name!r}"
        )
    if a.hook_site != b.hook_site:
        raise NsaeError(
            f"--compare needs the same hook site: {a.hook_site} in {a.path}, "
            f"{b.hook_site} in {b.path}"
        )
    for layer in layers:
        if layer not in b.layers:
            have = ", ".join(map(str, b.layers))
            raise NsaeError(f"--compare: layer {layer} is not in {b.path}; it has {have}")
        da, db = a.cfgs[layer].get("d_in"), b.cfgs[layer].get("d_in")
        if da != db:
            raise NsaeError(f"--compare: layer {layer} has d_in {da} in {a.path}, {db} in {b.path}")
