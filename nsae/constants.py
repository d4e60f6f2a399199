"""Names and key lists that several rooms share (one copy each)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CONF_DIR = PACKAGE.parent / "conf"  # the Hydra config groups
ASSETS = PACKAGE / "assets"  # the shipped model and text

# Config keys that never change a result: bookkeeping, loggers (names, paths), what the
# console shows, the activation cache's location. Everything else decides a run's numbers.
# keys that change no result: a finished run with other values here is the same run ("budget"
# and "tuned" act only through the trainer.*, optim.* and sae.* keys they set, which count)
BOOKKEEPING = ("resume", "logger", "hydra", "console", "data.cache_dir", "budget", "tuned")

# sae.* keys every SAE type has; the others are a type's own hyper-parameters.
SAE_COMMON_KEYS = ("type", "expansion_factor", "init_b_dec", "resample")

COEFF_MODES = ("alpha", "beta")  # coeff=alpha: c_l = alpha; coeff=beta: c_l = alpha n_l^k
