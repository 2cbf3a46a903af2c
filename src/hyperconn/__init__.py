"""hyperconn (formerly shc): Spectral-Sphere-Constrained Hyper-Connections and the hyper-connection family.

The public names (``make_connection``, ``HyperConnection``, ...) live in :mod:`hyperconn.connections`
and are loaded on first use (PEP 562), so ``import hyperconn`` alone, and with it
``hyperconn --version`` / ``--help``, does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:  # the installed distribution's version (pyproject.toml), one source of truth
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("hyperconn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CoefficientConnection",
    "HyperConnection",
    "Mixing",
    "available_connections",
    "connection_parameter_count",
    "expand_streams",
    "frozen_parameters",
    "make_connection",
    "reduce_streams",
    "register_connection",
]

if TYPE_CHECKING:
    from .connections import (
        CoefficientConnection,
        HyperConnection,
        Mixing,
        available_connections,
        connection_parameter_count,
        expand_streams,
        frozen_parameters,
        make_connection,
        reduce_streams,
        register_connection,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module(".connections", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
