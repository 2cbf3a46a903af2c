"""The mappings a ``TrainConfig`` is made from: read, renamed, layered, and turned into dataclasses.

:class:`hyperconn.train.config.TrainConfig` holds the settings; this module works one level below
it, on plain mappings: the layers of :func:`~hyperconn.train.config.build_config` (a base mapping,
the YAML file, the named flags, then ``--set section.key=value`` overrides; later wins) merged into
one mapping (:func:`layered_settings`), a run's saved ``config.yaml`` read back with the defaults it
was built with (:func:`read_saved_config`), old key names renamed with a warning
(:func:`renamed`), and one section's mapping checked and built into its dataclass
(:func:`build_section`).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

from .._optional import require
from ..vocabulary import RENAMED_KEYS, rename_keys, renamed_path
from . import yaml12

yaml = require("yaml", "hyperconn train")

RENAMED_API_FLAGS = {"connection": "kind", "streams": "num_streams"}  # build_config's old keywords: old -> new
FLAG_PATHS = {  # build_config's named flags -> the setting each one sets
    "kind": "model.connection.kind",
    "num_streams": "model.connection.num_streams",
    "steps": "train.steps",
    "seed": "train.seed",
    "out": "train.out_dir",
    "init_from": "train.init_from",
}


def layered_settings(
    preset: str | None,
    config_file: str | Path | None,
    overrides: list[str] | tuple[str, ...],
    base: dict | None,
    flags: dict,
) -> dict:
    """The mapping :func:`~hyperconn.train.config.build_config` builds its config from: ``base`` <
    the YAML file < ``preset`` and the named ``flags`` (:data:`FLAG_PATHS`) < ``overrides``.

    Each layer's old key names are read (with a warning) before the layers are merged, so a new
    key in a later layer overrides an old one in an earlier layer; an old flag name
    (:data:`RENAMED_API_FLAGS`) warns at the caller of ``build_config``.
    """
    data: dict = renamed(copy.deepcopy(base)) if base else {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml12.load(path.read_text(), f"config file {path}") or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        data = merge(data, renamed(loaded, f"config file {path}"))
    if preset is not None:
        data["preset"] = preset
    for old, new in RENAMED_API_FLAGS.items():
        if flags.get(old) is not None:
            if flags.get(new) is not None:
                raise ValueError(f"build_config: give {new}= alone, not also {old}= (its old name)")
            warnings.warn(f"build_config({old}=) is deprecated; use {new}=", DeprecationWarning, 3)
            flags[new] = flags[old]
        flags.pop(old, None)
    unknown = sorted(set(flags) - set(FLAG_PATHS))
    if unknown:
        raise ValueError(f"unknown flag(s) {', '.join(unknown)}; allowed: {', '.join(FLAG_PATHS)}")
    for name, value in flags.items():
        if value is not None:
            _set_path(data, FLAG_PATHS[name], value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-3)")
        _set_path(data, renamed_path(key.strip()), yaml12.load(raw, f"--set {item!r}"))
    return data


# Keys added after runs were saved whose default for a NEW run differs from what an OLD run was
# built with: a saved config without the key gets the old behaviour, so its checkpoint loads.
LEGACY_DEFAULTS: dict[str, object] = {
    "model.connection.skip_inert": False,  # before it existed every connection had its H_res
}


def read_saved_config(path: str | Path) -> dict:
    """The mapping of a run's saved ``config.yaml`` with :data:`LEGACY_DEFAULTS` filled in for
    keys it lacks (a missing key otherwise takes today's default, which may not match the run) and
    old key names renamed (``model.connection.streams``, with a warning naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config at {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {yaml12.problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(data).__name__}")
    data = renamed(data, str(path))
    for dotted, value in LEGACY_DEFAULTS.items():
        *sections, key = dotted.split(".")
        node = data
        for name in sections:
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(key, value)
    return data


def renamed(data, where: str = "") -> dict:
    """``data`` with the old keys of ``model.connection`` renamed (a warning each)."""
    model = data.get("model") if isinstance(data, dict) else None
    conn = model.get("connection") if isinstance(model, dict) else None
    if not isinstance(conn, dict) or not set(conn) & set(RENAMED_KEYS["model.connection"]):
        return data
    return {**data, "model": {**model, "connection": rename_keys(conn, "model.connection", where)}}


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` laid over it, section by section (``options`` is replaced whole)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def check_section(name: str, value) -> None:
    """A section (``model``, ``train``, ...) given as a value, not a mapping, is refused."""
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} is a section of settings, not a value (got {value!r}); set one key: {name}.KEY=VALUE")


def reject_unknown(prefix: str, data: dict, allowed: set[str]) -> None:
    """``data`` must be a mapping whose keys are all in ``allowed`` (``prefix`` names its section)."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def build_section(prefix: str, cls, data: dict):
    """``cls(**data)`` after rejecting unknown keys and reading float fields written as strings
    (YAML 1.1 reads ``1e-3`` as a string)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    reject_unknown(prefix, data, set(known))
    data = dict(data)
    for name, f in known.items():
        value = data.get(name)
        if isinstance(value, str) and "float" in str(f.type):
            try:
                data[name] = float(value)
            except ValueError as err:
                raise ValueError(f"{prefix}{name} must be a number, got {value!r}") from err
        elif isinstance(value, int) and not isinstance(value, bool) and str(f.type).startswith("float"):
            data[name] = float(value)
        elif (
            name in data
            and str(f.type) in ("str", "str | None")
            and not isinstance(value, str)
            and (value is not None or str(f.type) == "str")
        ):
            raise ValueError(
                f"{prefix}{name} must be a string, got {value!r}"
                f" (quote a name that YAML reads as a number or boolean: {prefix}{name}='\"{value}\"')"
            )
    return cls(**data)
