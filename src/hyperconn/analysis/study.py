"""What a comparison asks for: the study (kinds, num_streams, seeds, per-run axes) and its runs.

A study trains every kind x num_streams x axis value x seed; its axes, each sweeping one trainer
setting, are :mod:`hyperconn.analysis.axes` (re-exported here). Every axis value is part of the run
directory's name, ``<kind>-n<num_streams>[-<axis><value>...]-s<seed>`` (e.g. ``shc-n4-sb2.0-s0``);
the name without the seed is the run's *group*, what the report aggregates over seeds.

The study's old key names (``methods``, ``streams``; ``methods`` of an axis) are still read, with a
warning (:mod:`hyperconn.vocabulary`), so a ``study.json`` written before the rename re-renders.

A study comes from flags (``hyperconn compare --axis shc:model.connection.options.sigma_bias=1.0,2.0``)
or a YAML study spec (``hyperconn compare --study spec.yaml``, keys as :meth:`CompareConfig.from_dict`).

Run reuse: a run directory that already holds a config is reused only if its resolved
config equals what this invocation asks for, after filling defaults for keys added since it was
written and ignoring :data:`IGNORED_KEYS` (settings that change logging, progress, threads, device,
compilation or checkpointing, not the result); otherwise the comparison is refused before anything
is trained, naming every differing key (:func:`config_differences`).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..connections import available_connections, connection_option_defaults
from ..vocabulary import rename_keys, warn_old_attribute
from .analyze import DEFAULT_BATCHES
from .axes import AXIS_NAMES as AXIS_NAMES  # re-exported: defined here before axes.py
from .axes import LR_SCALE, Axis, value_text, yaml_scalar
from .axes import RESERVED_KEYS as RESERVED_KEYS  # re-exported: defined here before axes.py
from .axes import parse_axis as parse_axis  # re-exported: defined here before axes.py

IGNORED_KEYS = frozenset({
    "train.out_dir", "train.progress", "train.threads", "train.device", "train.compile",
    "train.log_interval", "train.checkpoint_interval", "train.keep_checkpoints", "train.checkpoint_format",
    "data.cache_dir",
})  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: kind, num_streams, this run's axis settings ``(label, key, value)``, seed."""

    kind: str
    num_streams: int
    settings: tuple[tuple[str, str, object], ...]
    seed: int

    @property
    def method(self) -> str:
        warn_old_attribute("RunSpec", "method", "kind")
        return self.kind

    @property
    def streams(self) -> int:
        warn_old_attribute("RunSpec", "streams", "num_streams")
        return self.num_streams

    @property
    def group(self) -> str:
        return f"{self.kind}-n{self.num_streams}" + "".join(f"-{lab}{value_text(v)}" for lab, _, v in self.settings)

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"

    @property
    def axis_values(self) -> dict[str, object]:
        return {label: value for label, _, value in self.settings}


@dataclass(init=False)
class CompareConfig:
    """A study: every kind of ``kinds`` x ``num_streams`` (an int or a list) x axis values x seed.
    ``methods=`` and ``streams=``, the old names of ``kinds`` and ``num_streams``, are still
    accepted (``DeprecationWarning``)."""

    preset: str
    kinds: tuple[str, ...]
    num_streams: int | tuple[int, ...] = 4
    seeds: int = 1
    out: Path = Path("runs/compare")
    steps: int | None = None
    overrides: tuple[str, ...] = ()
    axes: tuple[Axis, ...] = ()
    analyze_batches: int = DEFAULT_BATCHES
    bench_rounds: int = 5  # interleaved throughput rounds after training (0: skip)
    pairs: tuple[tuple[str, str], ...] = ()  # the Holm family, group pairs (A, B); empty: every pair

    def __init__(
        self,
        preset: str,
        kinds: tuple[str, ...] | None = None,
        num_streams: int | tuple[int, ...] | None = None,
        seeds: int = 1,
        out: Path = Path("runs/compare"),
        steps: int | None = None,
        overrides: tuple[str, ...] = (),
        axes: tuple[Axis, ...] = (),
        analyze_batches: int = DEFAULT_BATCHES,
        bench_rounds: int = 5,
        pairs: tuple = (),
        *,
        methods: tuple[str, ...] | None = None,
        streams: int | tuple[int, ...] | None = None,
    ) -> None:
        for old, new, value, given in (("methods", "kinds", methods, kinds), ("streams", "num_streams", streams,
                                                                             num_streams)):  # fmt: skip
            if value is not None:
                warnings.warn(f"CompareConfig({old}=) is deprecated; use {new}=", DeprecationWarning, 2)
                if given is not None:
                    raise ValueError(f"CompareConfig: give {new} alone, not also {old} (its old name)")
        kinds = methods if kinds is None else kinds
        if kinds is None:
            raise ValueError("CompareConfig needs kinds (the connection kinds to compare)")
        self.preset, self.kinds = preset, kinds
        self.num_streams = next((n for n in (num_streams, streams) if n is not None), 4)
        self.seeds, self.out, self.steps, self.overrides, self.axes = seeds, out, steps, overrides, axes
        self.analyze_batches, self.bench_rounds, self.pairs = analyze_batches, bench_rounds, pairs

    @property
    def methods(self) -> tuple[str, ...]:
        warn_old_attribute("CompareConfig", "methods", "kinds")
        return self.kinds

    @property
    def streams(self) -> tuple[int, ...]:
        warn_old_attribute("CompareConfig", "streams", "num_streams")
        return self.num_streams

    def validate(self) -> CompareConfig:
        kinds = available_connections()
        self.kinds = tuple(self.kinds)
        if not self.kinds:
            raise ValueError("kinds: give at least one connection kind")
        bad = [m for m in self.kinds if m not in kinds]
        if bad:
            raise ValueError(f"unknown connection kind(s) {', '.join(bad)}; choose from {', '.join(kinds)}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must not repeat, got {','.join(self.kinds)}")
        # each num_streams is checked where it is used, by the connection's constructor (through the
        # run's config); here only what compare itself needs: a non-empty list without repeats
        streams = (self.num_streams,) if isinstance(self.num_streams, int) else tuple(self.num_streams)
        if not streams:
            raise ValueError(f"num_streams: give at least one, got {self.num_streams!r}")
        if len(set(streams)) != len(streams):
            raise ValueError(f"num_streams must not repeat, got {self.num_streams!r}")
        self.num_streams = streams
        for name in ("seeds", "analyze_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.bench_rounds, int) or isinstance(self.bench_rounds, bool) or self.bench_rounds < 0:
            raise ValueError(f"bench_rounds must be an integer >= 0, got {self.bench_rounds!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        self.overrides = tuple(self.overrides)
        self.axes = tuple(self.axes)
        for axis in self.axes:
            axis.validate(self.kinds)
        labels = [a.label for a in self.axes]
        if len(set(labels)) != len(labels) or len({a.key for a in self.axes}) != len(self.axes):
            raise ValueError(f"axes must have distinct keys and names, got {labels}")
        self.out = Path(self.out)
        self.pairs = self._checked_pairs()
        return self

    def _checked_pairs(self) -> tuple[tuple[str, str], ...]:
        """``pairs`` as ``(A, B)`` tuples of this study's group names ("A:B" strings accepted)."""
        groups = list(dict.fromkeys(spec.group for spec in self.runs()))
        out: list[tuple[str, str]] = []
        for item in self.pairs:
            pair = tuple(item.split(":")) if isinstance(item, str) else tuple(item)
            if len(pair) != 2 or not all(isinstance(g, str) for g in pair):
                raise ValueError(f"pairs: each pair is A:B (two group names), got {item!r}")
            unknown = [g for g in pair if g not in groups]
            if unknown:
                raise ValueError(f"pairs: no group {', '.join(unknown)} in this study; its groups: {', '.join(groups)}")
            if pair[0] == pair[1] or set(pair) in [set(p) for p in out]:
                raise ValueError(f"pairs: {pair[0]}:{pair[1]} pairs a group with itself or repeats a pair")
            out.append(pair)
        return tuple(out)

    def runs(self) -> list[RunSpec]:
        """Every run, seed by seed (so a first result for every group exists early)."""
        specs = []
        for seed in range(self.seeds):
            for kind in self.kinds:
                axes = [a for a in self.axes if a.applies_to(kind)]
                for n in (1,) if kind == "residual" else self.num_streams:
                    for values in itertools.product(*(a.values for a in axes)):
                        settings = tuple((a.label, a.key, v) for a, v in zip(axes, values, strict=True))
                        specs.append(RunSpec(kind, n, settings, seed))
        return specs

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / spec.name

    def to_dict(self) -> dict:
        """The study, as ``study.json`` holds it (:meth:`from_dict` also reads the old key names)."""
        return {
            "preset": self.preset, "kinds": list(self.kinds), "num_streams": list(self.num_streams),
            "seeds": self.seeds, "out": str(self.out), "steps": self.steps, "set": list(self.overrides),
            "axes": [a.to_dict() for a in self.axes], "batches": self.analyze_batches,
            "bench_rounds": self.bench_rounds, "pairs": [f"{a}:{b}" for a, b in self.pairs],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> CompareConfig:
        """A study spec: ``preset``, ``kinds`` (list or comma string), ``num_streams`` (int or list),
        ``seeds``, ``out``, ``steps``, ``set`` (list of ``section.key=value``), ``axes`` (list of
        ``{key, values, name?, kinds?}``), ``batches``, ``bench_rounds``, ``pairs`` (list of
        ``A:B`` group names: the family the Holm correction covers; absent: every pair). The old names ``methods``
        and ``streams`` (and an axis's ``methods``) are read with a warning, or silently where they
        repeat the new key's value (as :meth:`to_dict` writes them)."""
        allowed = {"preset", "kinds", "num_streams", "seeds", "out", "steps", "set", "axes", "batches",
                   "bench_rounds", "pairs"}  # fmt: skip
        if not isinstance(data, dict):
            raise ValueError(f"a study spec must be a mapping, got {type(data).__name__}")
        data = _study_renamed(data)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown study key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        if "preset" not in data or "kinds" not in data:
            raise ValueError("a study spec needs 'preset' and 'kinds'")
        kinds = data["kinds"]
        kinds = tuple(m.strip() for m in kinds.split(",")) if isinstance(kinds, str) else tuple(kinds)
        axes = [Axis.from_dict(item) for item in data.get("axes") or []]
        streams = data.get("num_streams", 4)
        return cls(
            preset=data["preset"], kinds=kinds,
            num_streams=tuple(streams) if isinstance(streams, list) else streams,
            seeds=data.get("seeds", 1), out=Path(data.get("out", "runs/compare")), steps=data.get("steps"),
            overrides=tuple(data.get("set") or ()), axes=tuple(axes),
            analyze_batches=data.get("batches", DEFAULT_BATCHES), bench_rounds=data.get("bench_rounds", 5),
            pairs=tuple(data.get("pairs") or ()),
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> CompareConfig:
        from .._optional import require

        yaml = require("yaml", "hyperconn compare --study")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"study spec {path} does not exist")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})


def _as_list(value) -> list:
    if isinstance(value, str):
        return [m.strip() for m in value.split(",")]
    return list(value) if isinstance(value, list | tuple) else [value]


def _study_renamed(data: dict) -> dict:
    """``methods``/``streams`` read as ``kinds``/``num_streams``: dropped where they repeat the new
    key (what :meth:`CompareConfig.to_dict` writes), else renamed with a warning."""
    data = dict(data)
    for old, new in (("methods", "kinds"), ("streams", "num_streams")):
        if old in data and new in data and _as_list(data[old]) == _as_list(data[new]):
            del data[old]
    return rename_keys(data, "study", "the study")


def train_config(cfg: CompareConfig, spec: RunSpec):
    """The resolved trainer config of one run (``--set`` overrides, then the run's axis values)."""
    from ..train.config import build_config

    def build(extra: list[str]):
        return build_config(
            preset=cfg.preset, overrides=[*cfg.overrides, *extra], kind=spec.kind, num_streams=spec.num_streams,
            steps=cfg.steps, seed=spec.seed, out=str(cfg.run_dir(spec)),
        )  # fmt: skip

    extra = [f"{key}={yaml_scalar(v)}" for _, key, v in spec.settings if key != LR_SCALE]
    scale = [v for _, key, v in spec.settings if key == LR_SCALE]
    if scale:
        if isinstance(scale[0], bool) or not isinstance(scale[0], int | float) or scale[0] <= 0:
            raise ValueError(f"{LR_SCALE} values must be numbers > 0, got {scale[0]!r}")
        base = build(extra).train
        extra += [f"train.lr={yaml_scalar(base.lr * scale[0])}", f"train.min_lr={yaml_scalar(base.min_lr * scale[0])}"]
    return build(extra)


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved, wanted) -> list[str]:
    """The settings in which a run's saved config differs from the wanted one (both ``TrainConfig``;
    the saved one read with :func:`hyperconn.train.load_config`, which fills defaults for missing keys;
    unset connection options count as their defaults).

    :data:`IGNORED_KEYS` never count; ``model.vocab_size`` counts only when the wanted config fixes it
    (the trainer fills it in from the tokenizer).
    """
    have, want = _flatten(saved.to_dict()), _flatten(wanted.to_dict())
    # an unset connection option means its default (sigma_bias unset == sigma_bias 4.0)
    for flat in (have, want):
        kind = flat.get("model.connection.kind")
        for name, default in (connection_option_defaults(kind).items() if kind else ()):
            flat.setdefault(f"model.connection.options.{name}", default)
    diffs = []
    for key in sorted(set(have) | set(want)):
        if key in IGNORED_KEYS or (key == "model.vocab_size" and want.get(key) is None):
            continue
        a, b = have.get(key, "<unset>"), want.get(key, "<unset>")
        if a != b:
            diffs.append(f"{key}: the run has {a!r}, this invocation asks {b!r}")
    return diffs


@dataclass
class Job:
    """A run of the study with its resolved config."""

    spec: RunSpec
    run_dir: Path
    config: object  # TrainConfig


def plan(cfg: CompareConfig) -> list[Job]:
    """Every run's resolved config, validated before anything is trained."""
    cfg.validate()
    return [Job(spec, cfg.run_dir(spec), train_config(cfg, spec)) for spec in cfg.runs()]
