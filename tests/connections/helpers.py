"""Shared test helpers for the connection tests."""

from __future__ import annotations

import torch

import hyperconn

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


def perturbed(kind: str, n: int, dim: int, scale: float = 0.5, seed: int = 0, layer_index: int = 1, **options):
    """A connection whose every parameter is moved off its initial value by N(0, scale^2) noise."""
    conn = hyperconn.make_connection(kind, n, dim, layer_index=layer_index, **options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conn.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return conn
