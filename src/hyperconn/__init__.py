"""hyperconn (formerly shc): Spectral-Sphere-Constrained Hyper-Connections and the hyper-connection family."""

from .connections import (
    HyperConnection,
    Mixing,
    available_connections,
    connection_parameter_count,
    expand_streams,
    make_connection,
    reduce_streams,
)

try:  # the installed distribution's version (pyproject.toml), one source of truth
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("hyperconn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "HyperConnection",
    "Mixing",
    "available_connections",
    "connection_parameter_count",
    "expand_streams",
    "make_connection",
    "reduce_streams",
]
