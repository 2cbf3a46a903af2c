"""YAML values read by the YAML 1.2 core schema, so that a typo cannot change a setting silently.

PyYAML implements YAML 1.1, where ``yes``/``no``/``on``/``off``/``y``/``n`` are booleans, ``1:20``
is the integer 80 and ``1e-3`` (no dot) is a string. The 1.2 core schema resolves a plain scalar as

* null: ``null``, ``Null``, ``NULL``, ``~`` or empty,
* bool: ``true``/``True``/``TRUE``/``false``/``False``/``FALSE`` only,
* int: ``[-+]?[0-9]+``, ``0o[0-7]+``, ``0x[0-9a-fA-F]+``,
* float: ``[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?``, ``[-+]?.inf``, ``.nan``,
* anything else: a string.

So ``train.compile=yes`` is the string ``"yes"`` (refused: "must be true or false") instead of
turning compilation on, and ``data.source=on`` names a file called ``on``.
"""

from __future__ import annotations

import re

from .._optional import require

yaml = require("yaml", "hyperconn train")

_RESOLVERS = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
)


class Yaml12Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the YAML 1.2 core schema's implicit resolvers (module docstring)."""

    yaml_implicit_resolvers: dict = {}


for _first, _resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
    kept = [(tag, rx) for tag, rx in _resolvers if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "null")]
    Yaml12Loader.yaml_implicit_resolvers[_first] = kept
for _tag, _regex, _firsts in _RESOLVERS:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_regex), _firsts)


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text, 10)


def _construct_float(loader, node):
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def problem(err: Exception) -> str:
    """One line naming what is wrong and where, from a ``yaml.YAMLError``."""
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what


def load(text: str, source: str):
    """``text`` parsed with :class:`Yaml12Loader`; a syntax error is a ValueError naming ``source``."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(f"{source} is not valid YAML: {problem(err)}") from None
