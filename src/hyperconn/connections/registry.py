"""Names -> connection classes: the built-in kinds, your own, the factory and parameter counts.

A kind is found, in this order, as

1. a built-in kind (:data:`BUILTIN_KINDS`) or one registered in this process with
   :func:`register_connection`;
2. an entry point of an installed package, in the group ``hyperconn.connections`` (the entry
   point's name is the kind, its object the class), so a kind shipped in your own package is
   found by name without importing it first::

       [project.entry-points."hyperconn.connections"]
       orth = "mypkg.orth:Orthogonal"

3. an import path ``"package.module:ClassName"`` (in a config, on the command line).

Code is imported only from what is installed or on ``sys.path``. Every part of the project (the
factory, the model, ``hyperconn train/eval/generate/compare/analyze/bench``, ``hyperconn.hf``)
resolves a kind through :func:`connection_class`, so a registered kind is used exactly as a
built-in one. :func:`kind_spelling` is how a run records a kind so a later process finds it again.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from importlib import metadata

import torch

from .base import HyperConnection
from .hc import HC
from .identity import Identity
from .invariants import check_declared
from .kromhc import KromHC
from .mhc import MHC
from .mhc_lite import MHCLite
from .orthogonal import Orthogonal
from .residual import Residual
from .shc import SHC

ENTRY_POINT_GROUP = "hyperconn.connections"
_BUILTIN = (Residual, HC, MHC, MHCLite, KromHC, SHC, Identity, Orthogonal)  # in the order the docs list them
BUILTIN_KINDS: tuple[str, ...] = tuple(cls.kind for cls in _BUILTIN)
_REGISTRY: dict[str, type[HyperConnection]] = {cls.kind: cls for cls in _BUILTIN}


def _check_class(cls: object, origin: str) -> type[HyperConnection]:
    """``cls`` is a usable connection class: a ``HyperConnection`` subclass with a ``kind`` name
    and known invariants (one ``ValueError`` naming what is wrong)."""
    if not (isinstance(cls, type) and issubclass(cls, HyperConnection)):
        raise ValueError(f"{origin}: {cls!r} is not a hyperconn.HyperConnection subclass")
    kind = getattr(cls, "kind", "")
    if not isinstance(kind, str) or not kind.replace("_", "a").replace("-", "a").isalnum():
        raise ValueError(
            f"{origin}: {cls.__name__}.kind must be a name of letters, digits, '_' or '-', got {kind!r}"
        )
    check_declared(f"{origin}: {cls.__name__}", cls.invariants)
    if cls.mixing is HyperConnection.mixing:
        raise ValueError(f"{origin}: {cls.__name__} does not implement mixing()")
    return cls


def register_connection(cls: type[HyperConnection]) -> type[HyperConnection]:
    """Make ``cls`` known by its ``kind`` to every part of the project (usable as a decorator).

    Registering the same class twice is a no-op; another class under a taken name is refused."""
    _check_class(cls, "register_connection")
    taken = _REGISTRY.get(cls.kind)
    if taken is not None and taken is not cls:
        raise ValueError(
            f"register_connection: kind {cls.kind!r} is already {taken.__module__}.{taken.__qualname__}"
        )
    _REGISTRY[cls.kind] = cls
    return cls


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load(spelling: str, load) -> type[HyperConnection]:
    try:
        cls = load()
    except Exception as err:  # noqa: BLE001 (one line naming the kind, whatever the import raised)
        raise ValueError(
            f"connection kind {spelling!r} cannot be imported ({type(err).__name__}: {err}); install the "
            "package that provides it or put it on PYTHONPATH"
        ) from None
    return register_connection(_check_class(cls, f"connection kind {spelling!r}"))


def _import_path(path: str) -> type[HyperConnection]:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"connection kind {path!r}: an import path is 'package.module:ClassName'")

    def load():
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    return _load(path, load)


def available_connections() -> tuple[str, ...]:
    """Every kind known by name: the built-ins in the order the docs list them, then kinds
    registered in this process, then installed entry points."""
    extra = [name for name in _entry_points() if name not in _REGISTRY]
    return (*_REGISTRY, *extra)


def connection_class(kind: str) -> type[HyperConnection]:
    """The class of ``kind``: a name (built-in, registered, entry point) or ``"module:Class"``."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"connection kind must be a non-empty string, got {kind!r}")
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    if ":" in kind:
        return _import_path(kind)
    entry = _entry_points().get(kind)
    if entry is not None:
        cls = _load(kind, entry.load)
        if cls.kind != kind:
            raise ValueError(f"entry point {kind!r} names {cls.__qualname__}, whose kind is {cls.kind!r}")
        return cls
    raise ValueError(
        f"unknown connection kind {kind!r}; choose one of {', '.join(available_connections())}, "
        "or give an import path 'package.module:ClassName'"
    )


def registered_class(kind: str) -> type[HyperConnection] | None:
    """The class registered for ``kind``, or None (a kind defined outside the registry)."""
    return _REGISTRY.get(kind)


def kind_spelling(kind: str) -> str:
    """How a run records ``kind`` so that any later process finds the same class: the name of a
    built-in or installed entry-point kind, otherwise the class's import path ``"module:Class"``
    (a kind registered by a script is not known to ``hyperconn eval`` in another process)."""
    cls = connection_class(kind)
    if cls in _BUILTIN:
        return cls.kind
    entry = _entry_points().get(cls.kind)
    if entry is not None and entry.value.replace(" ", "") == f"{cls.__module__}:{cls.__qualname__}":
        return cls.kind
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        return cls.kind  # not importable by another process: a later `hyperconn eval` names it and refuses
    return f"{cls.__module__}:{cls.__qualname__}"


def connection_origin(kind: str) -> dict:
    """Where ``kind``'s class comes from: its import path and the installed distribution (name,
    version) that provides its module, ``None`` for code on the path but not installed."""
    cls = connection_class(kind)
    top = cls.__module__.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    dist = dists[0] if dists else None
    return {
        "kind": cls.kind,
        "import_path": f"{cls.__module__}:{cls.__qualname__}",
        "distribution": dist,
        "version": metadata.version(dist) if dist else None,
    }


def connection_options(kind: str) -> tuple[str, ...]:
    """Keyword options a kind accepts beyond ``(num_streams, dim, layer_index)``."""
    params = inspect.signature(connection_class(kind).__init__).parameters
    return tuple(
        p for p, v in params.items()
        if p not in ("self", "num_streams", "dim", "layer_index") and v.kind is not v.VAR_KEYWORD
    )


def connection_option_defaults(kind: str) -> dict:
    """The default value of every option of ``kind`` (what an unset option means)."""
    params = inspect.signature(connection_class(kind).__init__).parameters
    return {name: params[name].default for name in connection_options(kind)}


def make_connection(
    kind: str, num_streams: int, dim: int, layer_index: int = 0, *, num_fracs: int = 1, **options
) -> HyperConnection:
    """Build one hyper-connection of ``kind`` over ``num_streams`` streams of width ``dim``.

    ``kind``: a built-in name (``available_connections()``), a kind registered with
    :func:`register_connection` or installed with an entry point, or ``"package.module:Class"``.
    ``num_streams`` is ``n`` (1 for ``residual``, >= 2 otherwise) and ``dim`` the width ``C`` of
    each stream: the streams tensor is ``(..., n, C)``. ``num_streams > 16`` and ``> dim`` warns (the
    two arguments swapped, most likely).

    ``layer_index`` is the connection's position in the network (0, 1, 2, ... over every
    connection of the model): the static ``H_pre`` / ``H_post`` biases start with ``+1`` at stream
    ``layer_index mod n`` and ``-1`` elsewhere, so successive connections read and write
    different streams at init (HC's ``alpha_static`` likewise). Under copy expansion
    (:func:`expand_streams`: every stream the same vector) the first connection's ``H_res`` acts
    only through its column sums: for a kind whose columns sum to 1 exactly it is inert, and the
    model builds it without ``H_res`` (``mix_streams=False``; ``model.connection.skip_inert``).

    Options: ``eps`` (all but residual), ``sinkhorn_iters`` (mhc), ``sigma_bias`` (shc),
    ``res_init`` (mhc, mhc_lite, kromhc: ``"identity"`` (default) or ``"uniform"``, ``H_res = J``
    at init), ``mix_streams`` (mhc, mhc_lite, kromhc, shc: ``False`` builds the connection without
    ``H_res``, i.e. ``H_res = I``), ``recompute`` (all; recompute the width connection in backward
    instead of keeping its activations, a no-op for residual), ``backend`` (all: ``"auto"``
    (default), ``"torch"`` or ``"triton"``; see ``hyperconn.kernels``).

    ``num_fracs=m > 1`` builds a frac-connection instead (:mod:`hyperconn.connections.frac`): the
    width-``dim`` hidden state split into ``m`` fractions that ``kind`` mixes; ``num_streams``
    must then be 1 (no widening).
    """
    if num_fracs != 1:
        from .frac import FracConnection

        if num_streams != 1:
            raise ValueError(
                f"{kind}: num_fracs={num_fracs} splits the hidden state instead of widening it: "
                f"num_streams must be 1, got {num_streams!r}"
            )
        return FracConnection(kind, num_fracs, dim, layer_index, **options)
    cls = connection_class(kind)  # num_streams is checked by the class's constructor
    allowed = connection_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{cls.kind}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )
    _warn_if_swapped(cls.kind, num_streams, dim)
    return cls(num_streams, dim, layer_index, **options)


def _warn_if_swapped(kind: str, num_streams: object, dim: object) -> None:
    if isinstance(num_streams, int) and isinstance(dim, int) and num_streams > 16 and num_streams > dim:
        warnings.warn(
            f"{kind}: num_streams={num_streams} > dim={dim}: the signature is make_connection(kind, "
            "num_streams, dim); did you swap them?",
            stacklevel=3,
        )


def connection_parameter_count(kind: str, num_streams: int, dim: int, **options) -> int:
    """Learnable parameters of one connection, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = make_connection(kind, num_streams, dim, **options)
    return sum(p.numel() for p in module.parameters())
