"""What to say about a key, group or option that a command gets wrong: Hydra's composition
errors as one line with the nearest valid name (did you mean ...?), and `+key=value` refused
for a key that nsae never reads. `nsae.preflight` calls these before anything is written."""

from __future__ import annotations

from omegaconf import OmegaConf

from nsae.config import nearest
from nsae.constants import CONF_DIR
from nsae.errors import NsaeError


def check_added_keys(overrides: list[str]) -> None:
    """`+key=value` adds a key; one that nsae never reads (`known_keys`; under `trainer.`, a
    Lightning Trainer argument) is refused, naming the nearest known key. `++key=value` adds
    any key: for a key that your own config or a plugin reads."""
    known = None
    for arg in overrides:
        if not arg.startswith("+") or arg.startswith("++") or "=" not in arg:
            continue
        key = arg[1:].split("=", 1)[0]
        if key.startswith("hydra") or (CONF_DIR / key).is_dir():
            continue  # Hydra's own keys, and a config group added (+experiment=...)
        known = known or known_keys()
        if key in known or (key.startswith("trainer.") and key.count(".") == 1 and
                            key.split(".")[1] in trainer_arguments()):  # fmt: skip
            continue
        raise NsaeError(
            f"+{key}: nsae never reads {key}{nearest(key, known)}; "
            f"++{key}=... adds it anyway (for a key that your own config or a plugin reads)"
        )


def trainer_arguments() -> set[str]:
    import inspect

    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def known_keys() -> list[str]:
    """Every key that nsae's configs set (dotted: conf/config.yaml and every option of every
    group, under its package) and every config group's name: the keys nsae reads."""
    import re

    from nsae.rundir import flat

    keys: set[str] = set()
    for path in [CONF_DIR / "config.yaml", *sorted(CONF_DIR.glob("*/*.yaml"))]:
        group = path.parent.name
        if group == "hydra" or path.parent.parent.name == "hydra":
            continue
        text = path.read_text()
        found = re.search(r"^# @package (\S+)", text, re.M)
        package = found.group(1) if found else ("" if path.parent == CONF_DIR else group)
        package = "" if package == "_global_" else package
        data = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
        assert isinstance(data, dict)
        data.pop("defaults", None)
        keys |= {f"{package}.{k}" if package else k for k in flat(data)}
        keys |= {group} if path.parent != CONF_DIR else set()
    keys |= {k.rsplit(".", i)[0] for k in list(keys) for i in range(1, k.count(".") + 1)}
    return sorted(k for k in keys if not k.startswith("hydra"))


def valid_keys_at(key: str) -> str:
    """`valid keys under optim: betas, ...` for the parent node of `key`."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    keys = known_keys()
    depth = key.count(".")
    here = sorted(
        k for k in keys if k.count(".") == depth and (not parent or k.startswith(parent + "."))
    )
    names = ", ".join(k.rsplit(".", 1)[-1] for k in here) or "(none)"
    return f"valid keys {f'under {parent}' if parent else 'at the top level'}: {names}"


def explain_hydra_error(err: Exception, argv: list[str] | None = None) -> str:
    """One line for a Hydra composition error: the key or option, the nearest valid one, and
    what is valid."""
    import re

    from nsae.config import group_options

    text = str(err)
    if "Config group override must be" in text:
        for arg in argv or []:
            group = arg.split("=", 1)[0].lstrip("+~")
            if "=" in arg and (CONF_DIR / group).is_dir():
                valid = ", ".join(group_options(group))
                return f"{arg}: a config group takes option names; valid: {valid}"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        hint = nearest(option, options)
        return f"{group}={option} is not an option{hint}; valid: {', '.join(options) or '(none)'}"
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if unknown:
        key = unknown.group(1)
        if key in known_keys():  # a key of nsae's, absent from this command's config
            return absent_key(key, argv or [])
        return f"{key} is not a config key{nearest(key, known_keys())}; {valid_keys_at(key)}"
    present = re.search(r"An item is already at '([^']+)'", text)
    if present:
        key = present.group(1)
        return f"+{key}: {key} is already in the config; set it without +: {key}=..."
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"config: {first}"


def absent_key(key: str, argv: list[str]) -> str:
    """One line for a key that nsae knows but this command's config lacks: a `~` earlier in
    the command removed it, a group outside the defaults list, or a key that only some
    options of a group set."""
    from nsae.config import group_options

    for arg in argv:
        removed = arg[1:].split("=", 1)[0] if arg.startswith("~") else None
        if removed and (key == removed or key.startswith(removed + ".")):
            return f"{key}: {arg} earlier in the command removed it; valid: one of the two"
    if (CONF_DIR / key).is_dir():
        valid = ", ".join(group_options(key))
        return f"{key} is not in the defaults list; add it with +{key}=<option>; valid: {valid}"
    return (
        f"{key} is not set by this command's options (only some options of a group set it); "
        f"add it with +{key}=... or choose an option that sets it"
    )
