"""The two ends of the widened residual stream: the expansion after the embedding and the readout
before the final norm (docs/design.md, "Inert H_res at the ends").

    copy expand      x_i = h                        (every stream a copy; no parameters)
    learned expand   x_i = g_i h + b_i              g (n,) init 1, b (n, C) init 0
    sum readout      y = sum_j x_j                  (no parameters)
    learned readout  y = sum_j w_j x_j              w (n,) init 1

At init the learned ends compute exactly what copy and sum compute (``1 * h + 0 = h``,
``sum_j 1 * x_j = sum_j x_j``, bit for bit), so a model starts the same either way; unlike copy
and sum, they let the first connection see distinct streams and the last connection's row sums
matter, which is what gives the first and last ``H_res`` an effect.
"""

from __future__ import annotations

import torch
from torch import nn

from ..connections import expand_streams, reduce_streams
from ..connections.frac import merge_fracs, split_fracs

EXPAND_MODES = ("copy", "learned")
READOUT_MODES = ("sum", "learned")


class StreamEnd(nn.Module):
    """Base of the four ends: ``reset_parameters`` writes the initial values (a no-op without
    parameters), as every module of the model does for deferred initialisation."""

    def reset_parameters(self) -> None:
        """Nothing to initialise."""


class CopyExpand(StreamEnd):
    """``(..., C) -> (..., n, C)``: ``x_i = h``."""

    def __init__(self, num_streams: int) -> None:
        super().__init__()
        self.num_streams = num_streams

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return expand_streams(h, self.num_streams)


class LearnedExpand(StreamEnd):
    """``(..., C) -> (..., n, C)``: ``x_i = g_i h + b_i``, per-stream gain ``g`` (init 1) and offset
    ``b`` (init 0), in ``h``'s dtype."""

    def __init__(self, num_streams: int, dim: int) -> None:
        super().__init__()
        self.num_streams, self.dim = num_streams, dim
        self.gain = nn.Parameter(torch.empty(num_streams))
        self.offset = nn.Parameter(torch.empty(num_streams, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.gain.fill_(1.0)
            self.offset.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gain, offset = self.gain.to(h.dtype), self.offset.to(h.dtype)
        return h.unsqueeze(-2) * gain.unsqueeze(-1) + offset

    def extra_repr(self) -> str:
        return f"num_streams={self.num_streams}, dim={self.dim}"


class SumReadout(StreamEnd):
    """``(..., n, C) -> (..., C)``: ``y = sum_j x_j``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_streams(x)


class LearnedReadout(StreamEnd):
    """``(..., n, C) -> (..., C)``: ``y = sum_j w_j x_j``, per-stream weight ``w`` (init 1), in
    ``x``'s dtype."""

    def __init__(self, num_streams: int) -> None:
        super().__init__()
        self.num_streams = num_streams
        self.weight = nn.Parameter(torch.empty(num_streams))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight.to(x.dtype).unsqueeze(-1)).sum(dim=-2)

    def extra_repr(self) -> str:
        return f"num_streams={self.num_streams}"


class FracSplit(StreamEnd):
    """``(..., C) -> (..., m, C/m)``: the hidden state viewed as ``m`` fractions (frac-connections,
    :mod:`hyperconn.connections.frac`); a view, no copy."""

    def __init__(self, num_fracs: int) -> None:
        super().__init__()
        self.num_fracs = num_fracs

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return split_fracs(h, self.num_fracs)

    def extra_repr(self) -> str:
        return f"num_fracs={self.num_fracs}"


class FracMerge(StreamEnd):
    """``(..., m, C/m) -> (..., C)``: the fractions concatenated (a view of contiguous streams)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merge_fracs(x)


def make_expand(mode: str, num_streams: int, dim: int) -> StreamEnd:
    """The expansion ``mode`` ("copy" or "learned") over ``num_streams`` streams of width ``dim``."""
    if mode == "copy":
        return CopyExpand(num_streams)
    if mode == "learned":
        return LearnedExpand(num_streams, dim)
    raise ValueError(f"expand must be one of {', '.join(EXPAND_MODES)}, got {mode!r}")


def make_readout(mode: str, num_streams: int) -> StreamEnd:
    """The readout ``mode`` ("sum" or "learned") over ``num_streams`` streams."""
    if mode == "sum":
        return SumReadout()
    if mode == "learned":
        return LearnedReadout(num_streams)
    raise ValueError(f"readout must be one of {', '.join(READOUT_MODES)}, got {mode!r}")
