"""``TrainConfig``: preset + YAML file + command-line overrides, resolved and validated at the edge.

Precedence (later wins): the preset's model shape and training defaults, the YAML file, the named
flags (``--kind``, ``--num-streams``, ...), then ``--set section.key=value`` overrides. The YAML
layout mirrors the dataclasses::

    preset: demo
    model: {dim: 128, ..., connection: {kind: shc, num_streams: 4, options: {sigma_bias: 4.0}}}
    data:  {source: shakespeare, tokenizer: byte, ...}
    train: {steps: 300, lr: 3.0e-3, ...}
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._optional import require
from ..data import DataConfig
from ..data.config import BUILTIN_TOKENIZERS, LOCAL_PREFIX, tokenizer_path
from ..model import ConnectionConfig, ModelConfig, get_preset
from ..vocabulary import RENAMED_KEYS, rename_keys, renamed_path
from . import yaml12
from .precision import PRECISIONS

yaml = require("yaml", "hyperconn train")

RENAMED_API_FLAGS = {"connection": "kind", "streams": "num_streams"}  # build_config's old keywords: old -> new


@dataclass
class TrainSettings:
    """The optimisation loop. ``batch_size`` is sequences per device per micro-step; the global
    batch is ``batch_size * grad_accum * world_size`` sequences of ``seq_len`` tokens."""

    steps: int = 300
    batch_size: int = 16
    grad_accum: int = 1
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4  # floor of the cosine decay
    warmup_steps: int = 30
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    eps: float = 1e-8  # AdamW's epsilon
    grad_clip: float = 1.0  # max global gradient norm (> 0)
    # "bf16": autocast to bfloat16; "fp32": no autocast; "auto": bf16 on CUDA, fp32 on CPU (CPUs
    # without native bf16 matmul emulate it and run it slower; docs/performance.md has the numbers)
    precision: str = "auto"
    compile: bool = False
    seed: int = 0
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 10
    checkpoint_interval: int = 100
    keep_checkpoints: int = 2
    out_dir: str | None = None  # default: runs/<preset>-<kind>-n<num_streams>-s<seed>
    device: str = "auto"  # "auto": cuda:<local rank> if available, else cpu
    fsdp: bool = False  # under torchrun: FSDP2 (fully_shard) instead of DDP
    progress: bool = True  # a tqdm bar when stderr is a terminal, else one line per log_interval
    threads: int | None = None  # torch.set_num_threads for this process (None: leave torch's default)
    # "hf:<dir>": start from a local Hugging Face checkpoint converted by hyperconn.hf (model.connection
    # picks the kind; the preset's model shape is unused) with the checkpoint's own tokenizer
    init_from: str | None = None

    def validate(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "grad_accum",
            "seq_len",
            "eval_interval",
            "log_interval",
            "checkpoint_interval",
            "keep_checkpoints",
        )
        for name in positive:
            _check_int(f"train.{name}", getattr(self, name), 1)
        _check_int("train.warmup_steps", self.warmup_steps, 0)
        _check_int("train.eval_batches", self.eval_batches, 1)
        _check_int("train.seed", self.seed, 0)
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "beta1", "beta2", "eps"):
            _check_finite(f"train.{name}", getattr(self, name))
        for name in ("lr", "min_lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for name in ("grad_clip", "eps"):  # clip 0 would zero every update; eps 0 divides by zero
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must not exceed train.steps ({self.steps}): "
                "the learning rate would never reach train.lr"
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"train.{name} must be in [0, 1), got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.threads is not None:
            _check_int("train.threads", self.threads, 1)
        for name in ("compile", "fsdp", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name} must be true or false, got {getattr(self, name)!r}")
        from .distributed import check_device

        check_device(self.device, "train.device")


@dataclass
class TrainConfig:
    """Everything a run needs; ``config.yaml`` in the run directory is its resolved form."""

    preset: str = "demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)

    def validate(self) -> TrainConfig:
        """Check once: a second call on an unchanged config returns at once (``build_config``
        validates, and the trainer and the model it builds call this again)."""
        snapshot = repr(self.to_dict())
        if getattr(self, "_validated", None) == snapshot:
            return self
        get_preset(self.preset)
        _check_options(self.model.connection)
        self.model.validate()
        if self.train.init_from is not None:  # before data: a bad init_from is named, not the tokenizer it implies
            from ..hf.lm import check_init_from  # the hf extra: imported only for such runs

            tok = self.data.tokenizer
            tok_dir = None if tok in BUILTIN_TOKENIZERS else tokenizer_path(tok)
            check_init_from(self.train.init_from, tok, tok_dir, self.train.seq_len, self.train.fsdp)
        self.data.validate()
        self.train.validate()
        eps = self.model.norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"model.norm_eps must be a finite number > 0, got {eps!r}")
        for key, value in self.model.connection.options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"model.connection.options.{key} must be finite, got {value!r}")
        if self.train.init_from is None and self.train.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"train.seq_len={self.train.seq_len} is longer than the model supports "
                f"(model.max_seq_len={self.model.max_seq_len})"
            )
        self._validated = snapshot
        return self

    @property
    def run_dir(self) -> Path:
        if self.train.out_dir:
            return Path(self.train.out_dir)
        conn = self.model.connection
        return Path("runs") / f"{self.preset}-{conn.kind}-n{conn.num_streams}-s{self.train.seed}"

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "model": self.model.to_dict(),
            "data": asdict(self.data),
            "train": asdict(self.train),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A complete config from a (possibly partial) mapping layered on its preset (old key
        names are read, with a warning: :data:`hyperconn.vocabulary.RENAMED_KEYS`)."""
        data = _renamed(copy.deepcopy(data or {}))
        _reject_unknown("", data, {"preset", "model", "data", "train"})
        for section in ("model", "data", "train"):
            _check_section(section, data.get(section, {}))
        if "model" in data:
            _check_section("model.connection", data["model"].get("connection", {}))
            _check_section("model.connection.options", data["model"].get("connection", {}).get("options", {}))
        preset = get_preset(data.get("preset", "demo"))
        base = {
            "preset": preset.name,
            "model": preset.model.to_dict(),
            "data": asdict(DataConfig()),
            "train": {**asdict(TrainSettings()), **preset.training},
        }
        conn_given = (data.get("model") or {}).get("connection") or {}
        if "kind" in conn_given and "num_streams" not in conn_given:
            base["model"]["connection"]["num_streams"] = None  # the new kind's default
        if "kind" in conn_given and conn_given["kind"] != base["model"]["connection"]["kind"]:
            base["model"]["connection"]["options"] = {}
        merged = _merge(base, data)
        init_from = merged["train"].get("init_from")
        if isinstance(init_from, str) and "tokenizer" not in (data.get("data") or {}):
            # a checkpoint trains with its own tokenizer: "hf:<dir>" -> "local:<dir>"
            merged["data"] = {**merged["data"], "tokenizer": LOCAL_PREFIX + init_from.removeprefix("hf:")}
        model = dict(merged["model"])
        model["connection"] = _build("model.connection.", ConnectionConfig, model["connection"])
        return cls(
            preset=merged["preset"],
            model=_build("model.", ModelConfig, model),
            data=_build("data.", DataConfig, merged["data"]),
            train=_build("train.", TrainSettings, merged["train"]),
        )


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
    **flags,
) -> TrainConfig:
    """Preset < YAML file < named flags < ``section.key=value`` overrides; validated.

    ``flags``: ``kind``, ``num_streams``, ``steps``, ``seed``, ``out``, ``init_from`` (None = not
    given; ``connection`` and ``streams``, the old names of the first two, warn).
    ``base``: a mapping to start from instead of the bare preset (a run's saved config on resume).
    Each layer's old key names are read (with a warning) before the layers are merged, so a new
    key in a later layer overrides an old one in an earlier layer.
    """
    data: dict = _renamed(copy.deepcopy(base)) if base else {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml12.load(path.read_text(), f"config file {path}") or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
        data = _merge(data, _renamed(loaded, f"config file {path}"))
    if preset is not None:
        data["preset"] = preset
    for old, new in RENAMED_API_FLAGS.items():
        if flags.get(old) is not None:
            if flags.get(new) is not None:
                raise ValueError(f"build_config: give {new}= alone, not also {old}= (its old name)")
            warnings.warn(f"build_config({old}=) is deprecated; use {new}=", DeprecationWarning, 2)
            flags[new] = flags[old]
        flags.pop(old, None)
    flag_paths = {
        "kind": "model.connection.kind",
        "num_streams": "model.connection.num_streams",
        "steps": "train.steps",
        "seed": "train.seed",
        "out": "train.out_dir",
        "init_from": "train.init_from",
    }
    unknown = sorted(set(flags) - set(flag_paths))
    if unknown:
        raise ValueError(f"unknown flag(s) {', '.join(unknown)}; allowed: {', '.join(flag_paths)}")
    for name, value in flags.items():
        if value is not None:
            _set_path(data, flag_paths[name], value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-3)")
        _set_path(data, renamed_path(key.strip()), yaml12.load(raw, f"--set {item!r}"))
    return TrainConfig.from_dict(data).validate()


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
    data = _renamed(data, str(path))
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


def load_config(path: str | Path) -> TrainConfig:
    """A run's resolved ``config.yaml`` (:func:`read_saved_config`)."""
    return TrainConfig.from_dict(read_saved_config(path))


# --- helpers ------------------------------------------------------------------------------------


def _renamed(data, where: str = "") -> dict:
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


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _reject_unknown(prefix: str, data: dict, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _build(prefix: str, cls, data: dict):
    """``cls(**data)`` after rejecting unknown keys and reading float fields written as strings
    (YAML 1.1 reads ``1e-3`` as a string)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(prefix, data, set(known))
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


def _check_section(name: str, value) -> None:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} is a section of settings, not a value (got {value!r}); set one key: {name}.KEY=VALUE")


def _check_options(conn: ConnectionConfig) -> None:
    """Each connection option has the type of its default (``sigma_bias=abc`` names the option)."""
    from ..connections import available_connections, connection_option_defaults

    if conn.kind not in available_connections():
        return  # model.validate names the unknown kind
    defaults = connection_option_defaults(conn.kind)
    for key, value in conn.options.items():
        if key not in defaults:
            continue  # model.validate names the unknown option
        default = defaults[key]
        name = f"model.connection.options.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")


def _check_finite(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
