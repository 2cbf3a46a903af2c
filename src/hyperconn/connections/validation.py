"""The checks every connection runs once on its constructor arguments.

Each returns the validated value or raises one ``ValueError`` naming the argument, the value and
what is allowed (a bool is never accepted as a number).
"""

from __future__ import annotations

BACKENDS = ("auto", "torch", "triton")
RES_INITS = ("identity", "uniform")


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an integer ``>= minimum`` (a bool, float or string is refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    """``value`` as a finite real number ``> 0`` (a bool or string is refused)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_num_streams(kind: str, num_streams: object) -> int:
    """One rule for every kind: ``residual`` has exactly one stream; every hyper-connection kind
    needs at least two (with one stream there is nothing to mix: that is ``residual``)."""
    if kind == "residual":
        if num_streams != 1 or isinstance(num_streams, bool) or not isinstance(num_streams, int):
            raise ValueError(f"residual: num_streams must be 1, got {num_streams!r}")
        return 1
    if not isinstance(num_streams, int) or isinstance(num_streams, bool) or num_streams < 2:
        raise ValueError(
            f"{kind}: num_streams must be an integer >= 2, got {num_streams!r} (one stream: use kind 'residual')"
        )
    return num_streams


def check_backend(backend: object) -> str:
    """``backend``: one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def check_res_init(kind: str, res_init: object) -> str:
    """``res_init`` of the Birkhoff kinds: ``"identity"`` (``H_res`` near ``I`` at init) or
    ``"uniform"`` (``H_res = J = 11^T / n`` exactly at init)."""
    if res_init not in RES_INITS:
        raise ValueError(f"{kind}: res_init must be one of {', '.join(RES_INITS)}, got {res_init!r}")
    return res_init


def check_mix_streams(kind: str, mix_streams: object) -> bool:
    """``mix_streams``: a bool (False builds the connection without ``H_res``)."""
    if not isinstance(mix_streams, bool):
        raise ValueError(f"{kind}: mix_streams must be true or false, got {mix_streams!r}")
    return mix_streams
