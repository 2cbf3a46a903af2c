"""The settings of a training run: ``TrainSettings`` and ``TrainConfig``, their checks, and the two
ways to get one, :func:`build_config` (a new run) and :func:`load_config` (a saved one).

Precedence (later wins): the preset's model shape and training defaults, the YAML file, the named
flags (``--kind``, ``--num-streams``, ...), then ``--set section.key=value`` overrides; the mappings
are read and layered by :mod:`hyperconn.train.config_io`, and resolved and validated here, at the
edge. The YAML layout mirrors the dataclasses::

    preset: demo
    model: {dim: 128, ..., connection: {kind: shc, num_streams: 4, options: {sigma_bias: 4.0}}}
    data:  {source: shakespeare, tokenizer: byte, ...}
    train: {steps: 300, lr: 3.0e-3, ...}
"""

from __future__ import annotations

import copy
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._optional import require
from ..data import DataConfig
from ..data.config import BUILTIN_TOKENIZERS, LOCAL_PREFIX, tokenizer_path
from ..model import ConnectionConfig, ModelConfig, get_preset
from .config_io import LEGACY_DEFAULTS as LEGACY_DEFAULTS  # re-exported: defined here before config_io.py
from .config_io import RENAMED_API_FLAGS as RENAMED_API_FLAGS  # re-exported: defined here before config_io.py
from .config_io import build_section, check_section, layered_settings, merge, reject_unknown, renamed
from .config_io import read_saved_config as read_saved_config  # re-exported: defined here before config_io.py
from .precision import PRECISIONS

yaml = require("yaml", "hyperconn train")


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
    tensor_parallel: int = 1  # tp: attention/MLP weights sharded, streams sequence-sharded (docs/distributed.md)
    pipeline_parallel: int = 1  # pp: the blocks split into stages (torch.distributed.pipelining)
    pipeline_schedule: str = "gpipe"  # "gpipe" or "1f1b" (needs train.grad_accum >= pipeline_parallel)
    # "full" (one file, gathered on rank 0), "sharded" (DCP, every rank its shards) or "auto": sharded
    # under FSDP2/TP/PP, full otherwise; resolved when the run starts and kept in config.yaml
    checkpoint_format: str = "auto"
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
        from .layout import check_settings

        check_settings(self.train, self.model)
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
        data = renamed(copy.deepcopy(data or {}))
        reject_unknown("", data, {"preset", "model", "data", "train"})
        for section in ("model", "data", "train"):
            check_section(section, data.get(section, {}))
        if "model" in data:
            check_section("model.connection", data["model"].get("connection", {}))
            check_section("model.connection.options", data["model"].get("connection", {}).get("options", {}))
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
        merged = merge(base, data)
        init_from = merged["train"].get("init_from")
        if isinstance(init_from, str) and "tokenizer" not in (data.get("data") or {}):
            # a checkpoint trains with its own tokenizer: "hf:<dir>" -> "local:<dir>"
            merged["data"] = {**merged["data"], "tokenizer": LOCAL_PREFIX + init_from.removeprefix("hf:")}
        model = dict(merged["model"])
        model["connection"] = build_section("model.connection.", ConnectionConfig, model["connection"])
        return cls(
            preset=merged["preset"],
            model=build_section("model.", ModelConfig, model),
            data=build_section("data.", DataConfig, merged["data"]),
            train=build_section("train.", TrainSettings, merged["train"]),
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
    key in a later layer overrides an old one in an earlier layer
    (:func:`hyperconn.train.config_io.layered_settings`).
    """
    data = layered_settings(preset, config_file, overrides, base, flags)
    note = fit_warmup(data)
    cfg = TrainConfig.from_dict(data).validate()
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr, flush=True)
    return cfg


def fit_warmup(data: dict) -> str | None:
    """A smoke run just works: when ``train.steps`` is given below the preset's warm-up and
    ``train.warmup_steps`` is not given, the warm-up keeps the preset's fraction of the run (at
    least one step). Returns the line that says so (None when nothing changed); an explicit
    ``train.warmup_steps`` above ``train.steps`` is still refused by :meth:`TrainSettings.validate`."""
    train = data.get("train")
    if not isinstance(train, dict) or "steps" not in train or "warmup_steps" in train:
        return None
    steps = train["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return None  # validate names it
    try:
        preset = get_preset(data.get("preset", "demo"))
    except (KeyError, ValueError):
        return None  # validate names it
    defaults = {**asdict(TrainSettings()), **preset.training}
    warmup, preset_steps = defaults["warmup_steps"], defaults["steps"]
    if warmup <= steps:
        return None
    scaled = min(steps, max(1, round(warmup * steps / preset_steps)))
    train["warmup_steps"] = scaled
    return (
        f"train.steps={steps} is below the warm-up of preset {preset.name} ({warmup} steps): "
        f"train.warmup_steps scaled to {scaled} (the preset's {warmup}/{preset_steps} of the run); "
        "set train.warmup_steps to choose it"
    )


def load_config(path: str | Path) -> TrainConfig:
    """A run's resolved ``config.yaml`` (:func:`hyperconn.train.config_io.read_saved_config`)."""
    return TrainConfig.from_dict(read_saved_config(path))


# --- checks -------------------------------------------------------------------------------------


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
