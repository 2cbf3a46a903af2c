"""The hyper-connection family: residual, hc, mhc, mhc_lite, kromhc, shc, identity, orthogonal, and yours."""

from .base import CoefficientConnection, HyperConnection, Mixing, expand_streams, reduce_streams
from .frac import FracConnection
from .hc import HC
from .identity import Identity
from .inference import frozen_parameters
from .invariants import INVARIANTS, Invariant
from .kromhc import KromHC
from .mhc import MHC
from .mhc_lite import MHCLite
from .orthogonal import Orthogonal
from .registry import (
    BUILTIN_KINDS,
    ENTRY_POINT_GROUP,
    available_connections,
    connection_class,
    connection_option_defaults,
    connection_options,
    connection_origin,
    connection_parameter_count,
    kind_spelling,
    make_connection,
    register_connection,
)
from .residual import Residual
from .shc import SHC

__all__ = [
    "BUILTIN_KINDS",
    "ENTRY_POINT_GROUP",
    "HC",
    "INVARIANTS",
    "Identity",
    "Invariant",
    "Orthogonal",
    "MHC",
    "SHC",
    "CoefficientConnection",
    "FracConnection",
    "HyperConnection",
    "KromHC",
    "MHCLite",
    "Mixing",
    "Residual",
    "available_connections",
    "connection_class",
    "connection_option_defaults",
    "connection_options",
    "connection_origin",
    "connection_parameter_count",
    "expand_streams",
    "frozen_parameters",
    "kind_spelling",
    "make_connection",
    "reduce_streams",
    "register_connection",
]
