"""The hyper-connection family: residual, hc, mhc, mhc_lite, kromhc, shc."""

from .base import CoefficientConnection, HyperConnection, Mixing, expand_streams, reduce_streams
from .hc import HC
from .inference import frozen_parameters
from .kromhc import KromHC
from .mhc import MHC
from .mhc_lite import MHCLite
from .registry import (
    available_connections,
    connection_class,
    connection_option_defaults,
    connection_options,
    connection_parameter_count,
    make_connection,
)
from .residual import Residual
from .shc import SHC

__all__ = [
    "HC",
    "MHC",
    "SHC",
    "CoefficientConnection",
    "HyperConnection",
    "KromHC",
    "MHCLite",
    "Mixing",
    "Residual",
    "available_connections",
    "connection_class",
    "connection_option_defaults",
    "connection_options",
    "connection_parameter_count",
    "expand_streams",
    "frozen_parameters",
    "make_connection",
    "reduce_streams",
]
