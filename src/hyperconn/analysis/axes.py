"""The axis grammar of a study: one swept trainer setting, its values and its part of a run's name.

An *axis* sweeps one trainer setting (any ``section.key`` of the resolved config, e.g.
``model.connection.options.sigma_bias``, ``model.n_layers``, ``train.lr``, or :data:`LR_SCALE`,
``train.lr_scale``, which multiplies the preset's ``train.lr`` and ``train.min_lr``), optionally for
some kinds only. Every axis value is part of the run directory's name as ``<label><value>``
(:attr:`Axis.label`, :func:`value_text`; e.g. ``sb2.0`` in ``shc-n4-sb2.0-s0``).

An axis is written as text on the command line (:func:`parse_axis`,
``--axis shc:model.connection.options.sigma_bias=1.0,2.0``) or as a mapping in a study spec
(:meth:`Axis.from_dict`, ``{key, values, name?, kinds?}``; ``methods``, the old name of ``kinds``,
is still read, with a warning). The study that sweeps the axes is :mod:`hyperconn.analysis.study`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from ..vocabulary import warn_old_attribute, warn_renamed

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
RESERVED_KEYS = (
    "model.connection.kind", "model.connection.num_streams", "model.connection.streams", "train.seed", "train.out_dir"
)  # fmt: skip
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


@dataclass(frozen=True, init=False)
class Axis:
    """One swept setting: ``key`` takes each of ``values`` for the runs of ``kinds`` (all if empty)."""

    key: str
    values: tuple
    name: str = ""  # in run directory names; default AXIS_NAMES or the key's last component
    kinds: tuple[str, ...] = ()

    def __init__(self, key: str, values: tuple, name: str = "", kinds: tuple[str, ...] = (), *, methods=None) -> None:
        if methods is not None:  # the old name of kinds
            warnings.warn("Axis(methods=) is deprecated; use kinds=", DeprecationWarning, 2)
            kinds = tuple(methods)
        for field_name, value in (("key", key), ("values", values), ("name", name), ("kinds", kinds)):
            object.__setattr__(self, field_name, value)

    @property
    def methods(self) -> tuple[str, ...]:
        warn_old_attribute("Axis", "methods", "kinds")
        return self.kinds

    @property
    def label(self) -> str:
        return self.name or AXIS_NAMES.get(self.key, self.key.rsplit(".", 1)[-1])

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def validate(self, kinds: tuple[str, ...]) -> None:
        if not isinstance(self.key, str) or self.key.count(".") < 1:
            raise ValueError(f"axis key {self.key!r} must be a dotted config path such as train.lr")
        if self.key in RESERVED_KEYS:
            raise ValueError(f"axis key {self.key} is set by compare itself (--kinds, --num-streams, --seeds, --out)")
        if not self.values:
            raise ValueError(f"axis {self.key}: give at least one value")
        texts = [value_text(v) for v in self.values]
        if len(set(texts)) != len(texts):
            raise ValueError(f"axis {self.key}: values {list(self.values)} repeat (as run names: {texts})")
        if not _NAME.match(self.label) or self.label in ("n", "s"):
            raise ValueError(f"axis {self.key}: name {self.label!r} must be letters/underscores, not 'n' or 's'")
        bad = [m for m in self.kinds if m not in kinds]
        if bad:
            raise ValueError(f"axis {self.key}: kind(s) {', '.join(bad)} are not in this study ({', '.join(kinds)})")

    def to_dict(self) -> dict:
        return {"key": self.key, "values": list(self.values), "name": self.name, "kinds": list(self.kinds)}

    @classmethod
    def from_dict(cls, item) -> Axis:
        """An axis of a study spec, ``{key, values, name?, kinds?}`` (``methods``, the old name of
        ``kinds``, is read with a warning)."""
        if isinstance(item, dict):
            item = _axis_renamed(item)
        if (
            not isinstance(item, dict)
            or not {"key", "values"} <= set(item)
            or set(item) - {"key", "values", "name", "kinds"}
        ):
            raise ValueError(f"each axis must be a mapping with key, values[, name, kinds], got {item!r}")
        return cls(item["key"], tuple(item["values"]), item.get("name") or "", tuple(item.get("kinds") or ()))


def _axis_renamed(item: dict) -> dict:
    if "methods" not in item:
        return item
    if "kinds" in item:
        raise ValueError(f"an axis takes kinds alone, not also methods (its old name), got {item!r}")
    warn_renamed("an axis's methods (in the study)", "kinds")
    return {("kinds" if k == "methods" else k): v for k, v in item.items()}


def parse_axis(text: str) -> Axis:
    """``[kind,kind:]section.key=v1,v2,...`` (values read as YAML scalars) -> :class:`Axis`."""
    import yaml

    head, sep, raw = text.partition("=")
    if not sep or not raw.strip():
        raise ValueError(f"axis {text!r} must look like [kinds:]section.key=v1,v2 (e.g. shc:train.lr=1e-3,3e-3)")
    kinds, _, key = head.rpartition(":")
    values = tuple(yaml.safe_load(v.strip()) for v in raw.split(",") if v.strip())
    return Axis(key.strip(), values, kinds=tuple(m.strip() for m in kinds.split(",") if m.strip()))
