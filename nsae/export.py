"""Export each layer's SAE in the SAELens layout, and read exports back.

<run dir>/layer_<i>/cfg.json               architecture and provenance
<run dir>/layer_<i>/sae_weights.safetensors W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec
                                            (+ the architecture's own: threshold; b_gate,
                                            b_mag, r_mag instead of b_enc for gated)
<run dir>/layer_<i>/sparsity.safetensors    "sparsity": log10 firing frequency per feature

Architectures (cfg.json "architecture", as SAELens names them; `SAE.export_arch`):
none -> standard; topk -> topk (with "k"); jumprelu -> jumprelu; gated -> gated;
batchtopk, matryoshka -> jumprelu with the learned per-layer threshold for every feature
(as SAELens saves them for inference); normalized_sae -> normalized_sae (nsae.saelens).
`sae_lens.SAE.load_from_disk(folder)` loads every one but normalized_sae as is.

Exports always take raw activations (cfg.json "normalize_activations": "none"): an SAE
trained with `data.normalize_activations=expected_norm` arrives here with 1/s_l already
folded into its weights (`SAEModule.fold_input_scale` at the final evaluation); s_l is in
the run's norm_stats.json ("input_scale").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from nsae.errors import NsaeError
from nsae.saes import SAE, build_sae

HOOK_NAMES = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
}


def export_saes(
    sae: SAE,
    layers: list[int],
    density_LM: Tensor,
    out_dir: Path,
    meta: dict[str, Any],
    overwrite: bool = False,
) -> list[Path]:
    """Write one SAELens-layout folder per layer; return the folders. A folder that already
    holds an export is refused (nothing is written) unless `overwrite`."""
    taken = [
        str(out_dir / f"layer_{i}") for i in layers if (out_dir / f"layer_{i}/cfg.json").exists()
    ]
    if taken and not overwrite:
        raise NsaeError(
            f"{taken[0]} already holds an export of another run; export into an empty directory"
        )
    folders = []
    for j, layer in enumerate(layers):
        folder = out_dir / f"layer_{layer}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {
            **sae.export_arch(),
            "d_in": sae.d_model,
            "d_sae": sae.n_features,
            "dtype": "float32",
            "device": "cpu",
            "model_name": meta["model_name"],
            "hook_name": f"blocks.{layer}.{HOOK_NAMES[meta['hook_site']]}",
            "hook_layer": layer,
            "hook_head_index": None,
            "apply_b_dec_to_input": True,
            "finetuning_scaling_factor": False,
            "normalize_activations": "none",
            "context_size": meta["context_size"],
            "prepend_bos": True,
            "dataset_path": meta.get("dataset_path", ""),
            "nsae": {
                "sae_type": sae.name,
                "hparams": sae.hparams(),
                "hook_site": meta["hook_site"],
                # where the SAE came from: model and data as the user named them, code
                "provenance": meta.get("provenance", {}),
            },
        }
        (folder / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        weights = {k: v.float().cpu().contiguous() for k, v in sae.layer_state(j).items()}
        save_file(weights, str(folder / "sae_weights.safetensors"))
        sparsity = density_LM[j].float().clamp_min(1e-10).log10().cpu().contiguous()
        save_file({"sparsity": sparsity}, str(folder / "sparsity.safetensors"))
        folders.append(folder)
    return folders


def load(path: str | Path) -> SAE:
    """Load one exported layer folder as a single-layer nsae SAE (eval mode)."""
    folder = Path(path)
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    nsae_cfg = cfg["nsae"]
    sae = build_sae(nsae_cfg["sae_type"], 1, cfg["d_in"], cfg["d_sae"], **nsae_cfg["hparams"])
    sae.load_layer_state(0, w)
    return sae.eval()
