"""One word per concept, and the old words that still work.

The connection *kind* (``residual``, ``hc``, ``mhc``, ``mhc_lite``, ``kromhc``, ``shc``) is
``kind`` everywhere: ``model.connection.kind`` in a config, ``kind=`` in the API, ``--kind KIND`` in
``hyperconn train`` and ``--kinds A,B`` where a command takes a list (``compare``, ``bench``). The
number of residual streams ``n`` is ``num_streams``: ``model.connection.num_streams``,
``num_streams=``, ``--num-streams`` (a list in ``compare`` and ``bench layer``). (The tensor of
streams is ``streams``, so the count is not.) Run names keep the paper's ``-n4-``.

The old words (:data:`RENAMED_FLAGS`, :data:`RENAMED_KEYS`) are still read, each with one
:class:`RenamedWarning` naming the new word; whatever is written uses the new words. The ``hyperconn``
command prints such a warning as one line, ``hyperconn train: warning: --connection is deprecated;
use --kind``, once per command.
"""

from __future__ import annotations

import argparse
import warnings

# command-line flags: old -> new (each command adds the old flags it had, hidden from --help)
RENAMED_FLAGS: dict[str, str] = {
    "--connection": "--kind",
    "--methods": "--kinds",
    "--streams": "--num-streams",
}
# config keys (the last component of a dotted path, in the sections named): old -> new
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "model.connection": {"streams": "num_streams"},
    "study": {"methods": "kinds", "streams": "num_streams"},
}


class RenamedWarning(FutureWarning):
    """An old name (flag, config key) was used; the message names the new one."""


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """One :class:`RenamedWarning`: ``{old} is deprecated; use {new}``."""
    warnings.warn(RenamedWarning(f"{old} is deprecated; use {new}"), stacklevel=stacklevel)


def warn_old_attribute(cls: str, old: str, new: str) -> None:
    """Warn that ``cls.old`` is deprecated for ``new`` (called from the old name's property, so
    the warning points at the code that read it)."""
    warnings.warn(f"{cls}.{old} is deprecated; use {new}", DeprecationWarning, 3)


def rename_keys(mapping: dict, section: str, where: str = "") -> dict:
    """``mapping`` (a ``section`` of a config, e.g. ``model.connection``) with its old keys renamed
    (:data:`RENAMED_KEYS`), warning once per old key; a new copy, ``mapping`` is left as it is.

    ``where`` names the source in the warning (``config file x.yaml``); giving both the old and the
    new key is a ``ValueError``."""
    if not isinstance(mapping, dict):
        return mapping
    out = dict(mapping)
    prefix = "" if section == "study" else f"{section}."
    for old, new in RENAMED_KEYS[section].items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where or 'config'}: give {prefix}{new} alone, not also {prefix}{old} (its old name)")
        warn_renamed(f"{prefix}{old}" + (f" (in {where})" if where else ""), f"{prefix}{new}")
        out = {(new if key == old else key): value for key, value in out.items()}
    return out


def renamed_path(dotted: str) -> str:
    """A dotted config path with an old last key renamed, warning (``model.connection.streams`` ->
    ``model.connection.num_streams``); any other path unchanged."""
    section, _, key = dotted.rpartition(".")
    new = RENAMED_KEYS.get(section, {}).get(key) if section != "study" else None
    if new is None:
        return dotted
    warn_renamed(dotted, f"{section}.{new}")
    return f"{section}.{new}"


class _RenamedFlag(argparse.Action):
    """Stores into the new flag's ``dest`` and warns that the old spelling is deprecated."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        warn_renamed(option_string, self.new, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_renamed_flag(parser: argparse.ArgumentParser, old: str, **kwargs) -> None:
    """Accept ``old`` (a key of :data:`RENAMED_FLAGS`) as a hidden alias of its new flag, whose
    ``dest`` it fills; ``kwargs`` (``type``...) are the new flag's."""
    new = RENAMED_FLAGS[old]
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(
        old, dest=dest, action=_RenamedFlag, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs
    )
