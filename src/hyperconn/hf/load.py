"""Reload a converted model saved with ``save_pretrained``.

``convert`` records its settings in ``model.config.hyperconn`` (``shc`` before the rename, still
read), which ``save_pretrained`` writes into
``config.json``; the weights file then holds the original tensors under their original names
plus the connections' (``model.layers.<i>.attn_conn.*`` / ``mlp_conn.*``). A plain
``from_pretrained`` of such a directory would build the unconverted architecture and drop the
connection tensors, so :func:`load` does three steps: ``from_pretrained`` (any of its arguments:
dtype, device_map...), ``convert`` with the recorded settings, then the connection tensors read
from the checkpoint's safetensors file(s). A directory whose config.json has no ``hyperconn`` entry,
or whose weights hold no connection tensor, was not saved from a converted model: one ValueError
saying so; a connection tensor missing from the files is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .._optional import require
from ..connections import HyperConnection
from .convert import CONFIG_KEY, LEGACY_CONFIG_KEYS, ConversionConfig, apply_conversion, conversion_entry

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def connection_state_keys(model: nn.Module) -> list[str]:
    """The state-dict keys that belong to the model's hyper-connections."""
    prefixes = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, HyperConnection))
    return [key for key in model.state_dict() if key.startswith(prefixes)]


def _tensor_files(path: Path, keys: list[str]) -> dict[Path, list[str]]:
    """Which safetensors file should hold each key (a single file, or a sharded index; a key the
    index does not list is left out, so the caller finds it missing)."""
    if (path / INDEX_FILE).is_file():
        weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        files: dict[Path, list[str]] = {}
        for key in keys:
            if key in weight_map:
                files.setdefault(path / weight_map[key], []).append(key)
        return files
    if (path / SINGLE_FILE).is_file():
        return {path / SINGLE_FILE: keys}
    raise ValueError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} (save with save_pretrained)")


def _preview(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def load_connection_tensors(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy every connection tensor of ``model`` from the safetensors file(s) in ``path``: a
    ValueError when the files hold none of them (the weights were saved from an unconverted model)
    or list some but not all."""
    safe_open = require("safetensors", "hyperconn.hf.load").safe_open
    path = Path(path)
    keys = connection_state_keys(model)
    state: dict[str, torch.Tensor] = {}
    for file, wanted in _tensor_files(path, keys).items():
        with safe_open(str(file), framework="pt") as handle:
            present = set(handle.keys())
            state.update({k: handle.get_tensor(k) for k in wanted if k in present})
    if keys and not state:
        raise ValueError(
            f"{path}: config.json has a {CONFIG_KEY!r} entry but the weights hold none of the "
            f"{len(keys)} connection tensors ({_preview(keys)}), so they were not saved from a converted "
            f"model (an entry copied from a converted model's config, e.g. a config object passed to "
            f"from_config after hyperconn.hf.convert changed it, does this). Convert the plain model with "
            f"hyperconn.hf.convert(model, kind, num_streams) and save that with save_pretrained"
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks connection tensors {_preview(missing)}")
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # cannot happen: keys came from the model
        raise RuntimeError(f"unexpected keys {result.unexpected_keys}")


def load(path: str | os.PathLike, **from_pretrained_kwargs) -> nn.Module:
    """A converted causal LM from a directory written by ``save_pretrained`` after ``convert``.

    ``from_pretrained_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (``dtype``,
    ``device_map``, ``local_files_only``...). The model comes back in eval mode, as
    ``from_pretrained`` returns it."""
    transformers = require("transformers", "hyperconn.hf.load")
    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(str(path), **_config_kwargs(from_pretrained_kwargs))
    entry = conversion_entry(config)
    if entry is None:
        raise ValueError(
            f"{path}: config.json has no {CONFIG_KEY!r} entry, so it was not saved from a converted model "
            "(hyperconn.hf.load reloads only what save_pretrained wrote after hyperconn.hf.convert). Load it "
            "with AutoModelForCausalLM.from_pretrained, convert it first with hyperconn.hf.convert(model, kind, "
            "num_streams), and save_pretrained the converted model to reload it with hyperconn.hf.load"
        )
    spec = ConversionConfig.from_dict(entry).validate()  # before the weights load; apply_conversion reuses it
    for key in LEGACY_CONFIG_KEYS:  # the next save_pretrained writes the current key alone
        if hasattr(config, key):
            delattr(config, key)
    if "output_loading_info" in from_pretrained_kwargs:
        raise ValueError("hyperconn.hf.load checks the loading info itself; output_loading_info is not accepted")
    # the unconverted architecture sees the connection tensors as unexpected: HF's load report
    # would list them as a warning, so it is muted for this call and the same facts checked here
    with _load_report_muted(transformers):
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), config=config, output_loading_info=True, **from_pretrained_kwargs
        )
    apply_conversion(model, spec, initialise=False)  # the checkpoint's connection values come next
    missing = sorted(info["missing_keys"])
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks model tensors {_preview(missing)}")
    unexpected = sorted(set(info["unexpected_keys"]) - set(connection_state_keys(model)))
    if unexpected:
        warnings.warn(f"{path}: tensors the model does not use were ignored: {_preview(unexpected)}", stacklevel=2)
    load_connection_tensors(model, path)
    return model


@contextlib.contextmanager
def _load_report_muted(transformers):
    logger = transformers.utils.logging.get_logger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _config_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("local_files_only", "revision", "trust_remote_code") if k in kwargs}
