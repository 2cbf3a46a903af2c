"""What a comparison asks for: the study (methods, streams, seeds, per-run axes) and its runs.

A study trains every method x streams x axis value x seed. An *axis* sweeps one trainer setting
(any ``section.key`` of the resolved config, e.g. ``model.connection.options.sigma_bias``,
``model.n_layers``, ``train.lr``, or ``train.lr_scale``, which multiplies the preset's ``train.lr``
and ``train.min_lr``), optionally for some methods only. Every axis value is part of the run
directory's name, ``<method>-n<streams>[-<axis><value>...]-s<seed>`` (e.g. ``shc-n4-sb2.0-s0``); the
name without the seed is the run's *group*, what the report aggregates over seeds.

A study comes from flags (``hyperconn compare --axis shc:model.connection.options.sigma_bias=1.0,2.0``)
or a YAML study spec (``hyperconn compare --study spec.yaml``, keys as :meth:`CompareConfig.from_dict`).

Run reuse: a run directory that already holds a config is reused only if its resolved
config equals what this invocation asks for, after filling defaults for keys added since it was
written and ignoring :data:`IGNORED_KEYS` (settings that change logging, progress, threads, device
or compilation, not the result); otherwise the comparison is refused before anything is trained,
naming every differing key (:func:`config_differences`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ..connections import available_connections, connection_option_defaults
from .analyze import DEFAULT_BATCHES

LR_SCALE = "train.lr_scale"
# short names of common axes in run directory names; any other key uses its last component
AXIS_NAMES = {
    "model.connection.options.sigma_bias": "sb",
    "model.n_layers": "L",
    "model.dim": "d",
    "train.lr": "lr",
    LR_SCALE: "lrx",
    "train.steps": "steps",
}
RESERVED_KEYS = ("model.connection.kind", "model.connection.streams", "train.seed", "train.out_dir")
IGNORED_KEYS = frozenset({
    "train.out_dir", "train.progress", "train.threads", "train.device", "train.compile",
    "train.log_interval", "train.checkpoint_interval", "train.keep_checkpoints", "data.cache_dir",
})  # fmt: skip
_NAME = re.compile(r"^[A-Za-z][A-Za-z_]*$")


def value_text(value) -> str:
    """An axis value as it appears in a run directory name (``2.0``, ``0.001``, ``true``, ``abc``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", str(value))


def yaml_scalar(value) -> str:
    """``value`` as YAML text that reads back as the same type (``1e-05`` would read as a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return str(value)


@dataclass(frozen=True)
class Axis:
    """One swept setting: ``key`` takes each of ``values`` for the runs of ``methods`` (all if empty)."""

    key: str
    values: tuple
    name: str = ""  # in run directory names; default AXIS_NAMES or the key's last component
    methods: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or AXIS_NAMES.get(self.key, self.key.rsplit(".", 1)[-1])

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods

    def validate(self, kinds: tuple[str, ...]) -> None:
        if not isinstance(self.key, str) or self.key.count(".") < 1:
            raise ValueError(f"axis key {self.key!r} must be a dotted config path such as train.lr")
        if self.key in RESERVED_KEYS:
            raise ValueError(f"axis key {self.key} is set by compare itself (methods, --streams, --seeds, --out)")
        if not self.values:
            raise ValueError(f"axis {self.key}: give at least one value")
        texts = [value_text(v) for v in self.values]
        if len(set(texts)) != len(texts):
            raise ValueError(f"axis {self.key}: values {list(self.values)} repeat (as run names: {texts})")
        if not _NAME.match(self.label) or self.label in ("n", "s"):
            raise ValueError(f"axis {self.key}: name {self.label!r} must be letters/underscores, not 'n' or 's'")
        bad = [m for m in self.methods if m not in kinds]
        if bad:
            raise ValueError(f"axis {self.key}: method(s) {', '.join(bad)} are not in this study ({', '.join(kinds)})")

    def to_dict(self) -> dict:
        return {"key": self.key, "values": list(self.values), "name": self.name, "methods": list(self.methods)}


def parse_axis(text: str) -> Axis:
    """``[method,method:]section.key=v1,v2,...`` (values read as YAML scalars) -> :class:`Axis`."""
    import yaml

    head, sep, raw = text.partition("=")
    if not sep or not raw.strip():
        raise ValueError(f"axis {text!r} must look like [methods:]section.key=v1,v2 (e.g. shc:train.lr=1e-3,3e-3)")
    methods, _, key = head.rpartition(":")
    values = tuple(yaml.safe_load(v.strip()) for v in raw.split(",") if v.strip())
    return Axis(key.strip(), values, methods=tuple(m.strip() for m in methods.split(",") if m.strip()))


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: method, streams, this run's axis settings ``(label, key, value)``, seed."""

    method: str
    streams: int
    settings: tuple[tuple[str, str, object], ...]
    seed: int

    @property
    def group(self) -> str:
        return f"{self.method}-n{self.streams}" + "".join(f"-{lab}{value_text(v)}" for lab, _, v in self.settings)

    @property
    def name(self) -> str:
        return f"{self.group}-s{self.seed}"

    @property
    def axis_values(self) -> dict[str, object]:
        return {label: value for label, _, value in self.settings}


@dataclass
class CompareConfig:
    preset: str
    methods: tuple[str, ...]
    streams: int | tuple[int, ...] = 4
    seeds: int = 1
    out: Path = Path("runs/compare")
    steps: int | None = None
    overrides: tuple[str, ...] = ()
    axes: tuple[Axis, ...] = ()
    analyze_batches: int = DEFAULT_BATCHES
    bench_rounds: int = 5  # interleaved throughput rounds after training (0: skip)

    def validate(self) -> CompareConfig:
        kinds = available_connections()
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("methods: give at least one connection kind")
        bad = [m for m in self.methods if m not in kinds]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(kinds)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {','.join(self.methods)}")
        streams = (self.streams,) if isinstance(self.streams, int) else tuple(self.streams)
        if not streams or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in streams):
            raise ValueError(f"streams must be integers >= 1, got {self.streams!r}")
        if len(set(streams)) != len(streams):
            raise ValueError(f"streams must not repeat, got {self.streams!r}")
        self.streams = streams
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
            axis.validate(self.methods)
        labels = [a.label for a in self.axes]
        if len(set(labels)) != len(labels) or len({a.key for a in self.axes}) != len(self.axes):
            raise ValueError(f"axes must have distinct keys and names, got {labels}")
        self.out = Path(self.out)
        return self

    def runs(self) -> list[RunSpec]:
        """Every run, seed by seed (so a first result for every group exists early)."""
        specs = []
        for seed in range(self.seeds):
            for method in self.methods:
                axes = [a for a in self.axes if a.applies_to(method)]
                for n in (1,) if method == "residual" else self.streams:
                    for values in itertools.product(*(a.values for a in axes)):
                        settings = tuple((a.label, a.key, v) for a, v in zip(axes, values, strict=True))
                        specs.append(RunSpec(method, n, settings, seed))
        return specs

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / spec.name

    def to_dict(self) -> dict:
        return {
            "preset": self.preset, "methods": list(self.methods), "streams": list(self.streams),
            "seeds": self.seeds, "out": str(self.out), "steps": self.steps, "set": list(self.overrides),
            "axes": [a.to_dict() for a in self.axes], "batches": self.analyze_batches,
            "bench_rounds": self.bench_rounds,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> CompareConfig:
        """A study spec: ``preset``, ``methods`` (list or comma string), ``streams`` (int or list),
        ``seeds``, ``out``, ``steps``, ``set`` (list of ``section.key=value``), ``axes`` (list of
        ``{key, values, name?, methods?}``), ``batches``, ``bench_rounds``."""
        allowed = {"preset", "methods", "streams", "seeds", "out", "steps", "set", "axes", "batches", "bench_rounds"}
        if not isinstance(data, dict):
            raise ValueError(f"a study spec must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown study key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        if "preset" not in data or "methods" not in data:
            raise ValueError("a study spec needs 'preset' and 'methods'")
        methods = data["methods"]
        methods = tuple(m.strip() for m in methods.split(",")) if isinstance(methods, str) else tuple(methods)
        axes = []
        for item in data.get("axes") or []:
            if not isinstance(item, dict) or not {"key", "values"} <= set(item) or set(item) - {
                "key", "values", "name", "methods"}:
                raise ValueError(f"each axis must be a mapping with key, values[, name, methods], got {item!r}")
            axes.append(Axis(item["key"], tuple(item["values"]), item.get("name") or "",
                             tuple(item.get("methods") or ())))
        streams = data.get("streams", 4)
        return cls(
            preset=data["preset"], methods=methods,
            streams=tuple(streams) if isinstance(streams, list) else streams,
            seeds=data.get("seeds", 1), out=Path(data.get("out", "runs/compare")), steps=data.get("steps"),
            overrides=tuple(data.get("set") or ()), axes=tuple(axes),
            analyze_batches=data.get("batches", DEFAULT_BATCHES), bench_rounds=data.get("bench_rounds", 5),
        )  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> CompareConfig:
        from .._optional import require

        yaml = require("yaml", "hyperconn compare --study")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"study spec {path} does not exist")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})


def train_config(cfg: CompareConfig, spec: RunSpec):
    """The resolved trainer config of one run (``--set`` overrides, then the run's axis values)."""
    from ..train.config import build_config

    def build(extra: list[str]):
        return build_config(
            preset=cfg.preset, overrides=[*cfg.overrides, *extra], connection=spec.method, streams=spec.streams,
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
