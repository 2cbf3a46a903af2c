"""Shared test helpers for the connection tests."""

from __future__ import annotations

# (kind, stream counts the kind accepts) used across the connection tests
KIND_STREAMS = {
    "residual": (1,),
    "hc": (2, 3, 4, 8),
    "mhc": (2, 3, 4, 8),
    "mhc_lite": (2, 3, 4),
    "kromhc": (2, 4, 8),
    "shc": (2, 3, 4, 5, 8),
}

CASES = [(kind, n) for kind, ns in KIND_STREAMS.items() for n in ns]
