"""Helpers on the ``(..., n, C)`` streams themselves: widen, reduce, the arithmetic dtype, views.

These are the few functions every connection and both model ends share; none holds state.
"""

from __future__ import annotations

import torch

from .ops import autocast_off
from .validation import check_int


def expand_streams(h: torch.Tensor, num_streams: int) -> torch.Tensor:
    """``(..., C) -> (..., n, C)``: every stream a copy of ``h``."""
    check_int("num_streams", num_streams, 1)
    return h.unsqueeze(-2).expand(*h.shape[:-1], num_streams, h.shape[-1]).contiguous()


def reduce_streams(x: torch.Tensor) -> torch.Tensor:
    """``(..., n, C) -> (..., C)``: the sum over streams."""
    if x.dim() < 2:
        raise ValueError(f"reduce_streams needs streams of shape (..., n, C), got a {x.dim()}-D tensor")
    return x.sum(dim=-2)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for every input dtype but float64 (kept, so float64 gradcheck is exact)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def float32_region(x: torch.Tensor):
    """Autocast off on ``x``'s device: the small-matrix math stays in float32."""
    return autocast_off(x.device.type)


def token_view(
    t: torch.Tensor, lead: tuple[int, ...], shape: tuple[int, ...], strides: tuple[int, ...], offset: int
) -> torch.Tensor:
    """A view ``(*lead, *shape)`` into ``t`` (tokens, ...) whose token dimension has a uniform
    stride, starting ``offset`` elements into each token: one ``as_strided`` in place of the
    slice/select + view/unsqueeze pair that would otherwise reshape it."""
    step = t.stride(0)
    lead_strides = []
    for size in reversed(lead):
        lead_strides.append(step)
        step *= size
    return t.as_strided((*lead, *shape), (*reversed(lead_strides), *strides), t.storage_offset() + offset)
