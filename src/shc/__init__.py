"""shc: Spectral-Sphere-Constrained Hyper-Connections and the hyper-connection family."""

from .connections import (
    HyperConnection,
    Mixing,
    available_connections,
    connection_parameter_count,
    expand_streams,
    make_connection,
    reduce_streams,
)

__version__ = "0.1.0"

__all__ = [
    "HyperConnection",
    "Mixing",
    "available_connections",
    "connection_parameter_count",
    "expand_streams",
    "make_connection",
    "reduce_streams",
]
