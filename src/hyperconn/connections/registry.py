"""Names -> connection classes, the factory, and parameter counts."""

from __future__ import annotations

import inspect

import torch

from .base import HyperConnection
from .hc import HC
from .kromhc import KromHC
from .mhc import MHC
from .mhc_lite import MHCLite
from .residual import Residual
from .shc import SHC

_REGISTRY: dict[str, type[HyperConnection]] = {
    cls.kind: cls for cls in (Residual, HC, MHC, MHCLite, KromHC, SHC)
}


def available_connections() -> tuple[str, ...]:
    """The connection kinds, in the order the docs list them."""
    return tuple(_REGISTRY)


def connection_class(kind: str) -> type[HyperConnection]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown connection kind {kind!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def registered_class(kind: str) -> type[HyperConnection] | None:
    """The class registered for ``kind``, or None (a kind defined outside the registry)."""
    return _REGISTRY.get(kind)


def connection_options(kind: str) -> tuple[str, ...]:
    """Keyword options a kind accepts beyond ``(num_streams, dim, layer_index)``."""
    params = inspect.signature(connection_class(kind).__init__).parameters
    return tuple(p for p in params if p not in ("self", "num_streams", "dim", "layer_index"))


def connection_option_defaults(kind: str) -> dict:
    """The default value of every option of ``kind`` (what an unset option means)."""
    params = inspect.signature(connection_class(kind).__init__).parameters
    return {name: params[name].default for name in connection_options(kind)}


def make_connection(
    kind: str, num_streams: int, dim: int, layer_index: int = 0, **options
) -> HyperConnection:
    """Build one hyper-connection of ``kind`` over ``num_streams`` streams of width ``dim``.

    Options: ``eps`` (all but residual), ``sinkhorn_iters`` (mhc), ``sigma_bias`` (shc),
    ``res_init`` (mhc, mhc_lite, kromhc: ``"identity"`` (default) or ``"uniform"``, ``H_res = J``
    at init), ``mix_streams`` (mhc, mhc_lite, kromhc, shc: ``False`` builds the connection without
    ``H_res``, i.e. ``H_res = I``; the model sets it where ``H_res`` is provably inert),
    ``recompute`` (all; recompute the width connection in backward instead of keeping its
    activations, a no-op for residual), ``backend`` (all: ``"auto"`` (default), ``"torch"`` or
    ``"triton"``; see :mod:`hyperconn.kernels`).
    """
    cls = connection_class(kind)  # num_streams is checked by the class's constructor
    allowed = connection_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{kind}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(num_streams, dim, layer_index, **options)


def connection_parameter_count(kind: str, num_streams: int, dim: int, **options) -> int:
    """Learnable parameters of one connection, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = make_connection(kind, num_streams, dim, **options)
    return sum(p.numel() for p in module.parameters())
