"""A griffe extension that turns Sphinx roles in docstrings into mkdocstrings cross-references.

The docstrings use Sphinx roles (``:func:`collect` ``, ``:class:`~hyperconn.hf.layer.HyperDecoderLayer` ``,
``:mod:`.summarise` ``), which mkdocstrings renders as literal text. Once the whole package is
loaded, this rewrites every role in every docstring:

- a target that names an object of the package becomes an optional autorefs cross-reference to
  its canonical path: a link when that object is rendered on some page, code text otherwise (so
  ``mkdocs build --strict`` never fails on it);
- any other target becomes code text.

Targets are resolved as Sphinx does, from the inside out: the enclosing classes, the module, its
parent packages, then the target as an absolute path; a leading ``.`` or a name found nowhere else
falls back to the one object whose path ends with it (the one nearest the docstring's module when
several do). A function role that names a module shadowing its namesake function (``hyperconn.hf.load``)
links the function. ``~`` shows only the last component; functions and methods get ``()``.

Loaded by mkdocs.yml (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Alias, Extension, GriffeLoader, Module, Object

ROLE = re.compile(r":(?:py:)?(mod|func|meth|class|attr|data|obj|exc|const):`([^`]+)`")
CALLABLE_ROLES = {"func", "meth"}


class SphinxRoles(Extension):
    """Rewrite ``:role:`target` `` in every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs: Any) -> None:
        objects: dict[str, Object] = {}
        aliases: dict[str, str] = {}
        _index(pkg, objects, aliases)
        for obj in list(objects.values()):
            doc = obj.docstring
            if doc is None or ":" not in doc.value:
                continue
            new = ROLE.sub(lambda m, obj=obj: _replace(m, obj, objects, aliases), doc.value)
            if new != doc.value:
                doc.value = new
                doc.__dict__.pop("parsed", None)  # a parse cached before this runs would be stale


def _index(obj: Object, objects: dict[str, Object], aliases: dict[str, str]) -> None:
    """Every object under ``obj`` by path; imported names (aliases) map to the path they import."""
    objects[obj.path] = obj
    for member in obj.members.values():
        if isinstance(member, Alias):
            aliases[member.path] = member.target_path
        elif member.path not in objects:
            _index(member, objects, aliases)


def _canonical(path: str, objects: dict[str, Object], aliases: dict[str, str], depth: int = 0) -> str | None:
    """The canonical path of the package object ``path`` names (through imports), or None."""
    if depth > 20:
        return None
    if path in objects:
        return path
    if path in aliases:
        return _canonical(aliases[path], objects, aliases, depth + 1)
    head, _, tail = path.rpartition(".")
    if not head:
        return None
    base = _canonical(head, objects, aliases, depth + 1)
    if base is None or base == head:
        return None
    return _canonical(f"{base}.{tail}", objects, aliases, depth + 1)


def _scopes(obj: Object) -> list[str]:
    """The paths a relative target is tried under, innermost first."""
    scopes = []
    node: Object | None = obj
    while node is not None:
        if node.is_class or node.is_module:
            scopes.append(node.path)
        node = node.parent
    return scopes


def _resolve(target: str, obj: Object, objects: dict[str, Object], aliases: dict[str, str]) -> str | None:
    name = target.lstrip(".")
    for scope in _scopes(obj):
        if found := _canonical(f"{scope}.{name}", objects, aliases):
            return found
    if found := _canonical(name, objects, aliases):
        return found
    suffix = "." + name
    matches = [path for path in objects if path.endswith(suffix)]
    if not matches:
        return None
    here = obj.module.path.split(".")

    def shared(path: str) -> int:
        parts = path.split(".")
        n = 0
        while n < min(len(parts), len(here)) and parts[n] == here[n]:
            n += 1
        return n

    best = max(shared(p) for p in matches)
    nearest = [p for p in matches if shared(p) == best]
    return nearest[0] if len(nearest) == 1 else None


def _replace(match: re.Match, obj: Object, objects: dict[str, Object], aliases: dict[str, str]) -> str:
    role, target = match.group(1), match.group(2).strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    shown = target.rpartition(".")[2] if short else target.lstrip(".")
    if role in CALLABLE_ROLES and not shown.endswith(")"):
        shown += "()"
    found = _resolve(target, obj, objects, aliases)
    if found is not None and role != "mod" and objects[found].is_module:
        # a submodule shadowing the function it exports (hyperconn.hf.load the module vs the function)
        found = _canonical(f"{found}.{found.rpartition('.')[2]}", objects, aliases) or found
    if found is None:
        return f"`{shown}`"
    return f'<autoref identifier="{html.escape(found)}" optional><code>{html.escape(shown)}</code></autoref>'
