"""Helpers on the ``(..., n, C)`` streams themselves: widen, reduce, the arithmetic dtype, views.

These are the few functions every connection and both model ends share; none holds state.
"""

from __future__ import annotations

import warnings

import torch

from .ops import autocast_off
from .validation import check_int


def expand_streams(h: torch.Tensor, num_streams: int) -> torch.Tensor:
    """``(..., C) -> (..., n, C)``: every stream a copy of ``h``."""
    check_int("num_streams", num_streams, 1)
    return h.unsqueeze(-2).expand(*h.shape[:-1], num_streams, h.shape[-1]).contiguous()


def reduce_streams(x: torch.Tensor, num_streams: int | None = None) -> torch.Tensor:
    """``(..., n, C) -> (..., C)``: the sum over streams (dimension -2).

    The shape alone cannot tell a streams tensor ``(batch, tokens, n, C)`` from a hidden state
    ``(batch, tokens, C)``, so: pass ``num_streams`` and ``x.shape[-2]`` is checked against it; without
    it a 3-D tensor warns (``(tokens, n, C)`` is a streams tensor, ``(batch, tokens, C)`` is not)."""
    if x.dim() < 2:
        raise ValueError(f"reduce_streams needs streams of shape (..., n, C), got a {x.dim()}-D tensor")
    if num_streams is not None:
        check_int("num_streams", num_streams, 1)
        if x.shape[-2] != num_streams:
            raise ValueError(
                f"reduce_streams: streams must have shape (..., n={num_streams}, C), got {tuple(x.shape)}"
            )
    elif x.dim() == 3:
        warnings.warn(
            f"reduce_streams: summing dimension -2 of a 3-D tensor {tuple(x.shape)} as {x.shape[-2]} streams; "
            "a (batch, tokens, C) hidden state is not a streams tensor (expand_streams makes one): pass "
            "num_streams= to check the shape",
            stacklevel=2,
        )
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
