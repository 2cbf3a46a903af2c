"""Frac-connections (Zhu et al., arXiv 2503.14125): the hidden state split into ``m`` fractions
instead of widened into ``n`` copies, so the residual stream costs what a residual one costs.

The hidden state ``h`` (..., C) is viewed as ``m = num_fracs`` streams of width ``C / m``
(``h_k = h[..., k C/m : (k+1) C/m]``; a view, nothing is copied). Any kind ``k`` built over those
``m`` streams (``num_streams = m``, ``dim = C / m``) gives the per-token coefficients
``(H_pre (m), H_res (m, m), H_post (m))`` from its own ``mixing``; then::

    u    = concat_k( P_k h_k )                    branch input, width C
    h'_j = sum_i H_res[i, j] h_i + Q_j F(u)_j     F(u)_j: fraction j of the branch output
    P    = H_pre  - H_pre(init)  + 1              per fraction, 1 at init
    Q    = H_post - H_post(init) + 1

The paper's frac-connection matrix ``FC`` ((m+1) x 2m) maps onto this as: its ``alpha`` (m x m,
``A^T H``) is the kind's ``H_res`` with the kind's own constraint (mHC doubly stochastic, sHC on
the spectral sphere, HC free) and invariants; its ``beta`` (``B^T T(..)``: fraction ``j`` of the
branch output scaled by ``beta_j`` and added to fraction ``j``) is ``Q``; its ``gamma``
(``Y^T H``, the branch input) is ``diag(P)``: each fraction of the branch input is its own
fraction of ``h``, weighed. Cross-fraction mixing happens in ``H_res``, not in the branch input
(the paper's ``gamma`` is a full m x m matrix: the one simplification here, which keeps the kind's
``H_pre`` (m) as it is). ``H_pre`` and ``H_post`` are recentred by constants measured once at
``reset_parameters`` (the kind's coefficients at init, input-independent for every built-in
kind), so every fraction starts with weight 1, the paper's init (``gamma = I``, ``beta = 1``):
with ``H_res = I`` at init (hc exactly) a frac-connection starts as the residual connection
``h + F(h)``. The dynamic parts are the kind's (HC: per-fraction RMSNorm and tanh projections,
as the paper's dynamic frac-connections; mHC/sHC: one projection of the whole ``h``).

Memory: the model keeps ``(B, T, m, C/m)`` between sublayers, the bytes of a residual model's
``(B, T, C)``; n-widening keeps ``n`` times that (``hyperconn bench memory``,
docs/frac-connections.md). Only the expansion rate ``n = 1`` is built (the paper's setting).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import HyperConnection, Mixing
from .ops import autocast_off
from .streams import compute_dtype


def check_num_fracs(kind: str, num_fracs: object, dim: object) -> int:
    """``num_fracs`` is an integer >= 2 that divides ``dim`` (one ValueError naming the values)."""
    if not isinstance(num_fracs, int) or isinstance(num_fracs, bool) or num_fracs < 2:
        raise ValueError(f"{kind}: num_fracs must be an integer >= 2, got {num_fracs!r} (1: no fractions)")
    if kind == "residual":
        raise ValueError("residual: num_fracs needs a hyper-connection kind (residual has nothing to mix)")
    if isinstance(dim, int) and dim % num_fracs:
        raise ValueError(
            f"{kind}: dim={dim} is not divisible by num_fracs={num_fracs} (each fraction has width dim / num_fracs)"
        )
    return num_fracs


class FracConnection(nn.Module):
    """A frac-connection of ``kind`` over ``num_fracs`` fractions of a width-``dim`` hidden state.

    Streams: ``(..., num_fracs, dim // num_fracs)`` (the hidden state viewed in fractions,
    :func:`split_fracs`); the branch sees and returns ``(..., dim)``. ``inner`` is the kind's own
    connection over the fractions; ``options`` go to it (``recompute=True`` recomputes the width
    step here in backward)."""

    def __init__(self, kind: str, num_fracs: int, dim: int, layer_index: int = 0, **options) -> None:
        super().__init__()
        from .registry import make_connection  # the registry builds this wrapper

        check_num_fracs(kind, num_fracs, dim)
        self.num_fracs = num_fracs
        self.dim = dim
        self.frac_dim = dim // num_fracs
        self.inner: HyperConnection = make_connection(kind, num_fracs, self.frac_dim, layer_index, **options)
        self.kind = self.inner.kind
        self.num_streams = num_fracs  # the streams the kind mixes: the fractions
        self.layer_index = layer_index
        self.register_buffer("pre_shift", torch.zeros(num_fracs), persistent=False)
        self.register_buffer("post_shift", torch.zeros(num_fracs), persistent=False)
        self._set_shifts()

    @property
    def invariants(self) -> tuple[str, ...]:
        """The kind's: ``H_res`` is the kind's own over the fractions."""
        return self.inner.invariants

    def extra_repr(self) -> str:
        return f"num_fracs={self.num_fracs}, dim={self.dim}"

    def reset_parameters(self) -> None:
        """The kind's init, then the recentring constants from it."""
        self.inner.reset_parameters()
        self._set_shifts()

    @torch.no_grad()
    def _set_shifts(self) -> None:
        param = next(self.inner.parameters(), None)
        device = param.device if param is not None else self.pre_shift.device
        if device.type == "meta":
            return  # built on meta: reset_parameters after to_empty sets them
        probe = torch.ones(1, self.num_fracs, self.frac_dim, dtype=torch.float64, device=device)
        pre, _, post = self.inner.mixing(probe)
        self.pre_shift.copy_(1.0 - pre.reshape(self.num_fracs).float())
        self.post_shift.copy_(1.0 - post.reshape(self.num_fracs).float())

    def check_streams(self, streams: torch.Tensor) -> None:
        expected = (self.num_fracs, self.frac_dim)
        if streams.dim() < 2 or tuple(streams.shape[-2:]) != expected:
            raise ValueError(
                f"{self.kind} num_fracs={self.num_fracs}: streams must have shape (..., num_fracs, dim / num_fracs) "
                f"= (..., {expected[0]}, {expected[1]}), got {tuple(streams.shape)}"
            )

    def mixing(self, streams: torch.Tensor) -> Mixing:
        """``(P (..., m), H_res (..., m, m), Q (..., m))`` per token, in ``compute_dtype``."""
        self.check_streams(streams)
        pre, res, post = self.inner.mixing(streams)
        return Mixing(pre + self.pre_shift.to(pre.dtype), res, post + self.post_shift.to(post.dtype))

    def width(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(u (..., C), mixed (..., m, C/m), Q (..., m))``; ``u`` and ``mixed`` in the streams' dtype."""
        if self.inner.recompute and torch.is_grad_enabled():
            return checkpoint(self._width, streams, use_reentrant=False)
        return self._width(streams)

    def _width(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with autocast_off(streams.device.type):
            pre, res, post = self.mixing(streams)
            x = streams.to(compute_dtype(streams))
            u = (pre.unsqueeze(-1) * x).flatten(-2)
            mixed = torch.matmul(res.transpose(-1, -2), x)
        return u.to(streams.dtype), mixed.to(streams.dtype), post

    def depth(self, mixed: torch.Tensor, post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
        """``h'_j = mixed_j + Q_j F(u)_j`` in ``post``'s dtype, returned in ``mixed``'s."""
        if not isinstance(branch_out, torch.Tensor) or branch_out.shape[-1] != self.dim:
            shape = tuple(branch_out.shape) if isinstance(branch_out, torch.Tensor) else type(branch_out).__name__
            raise ValueError(
                f"{self.kind} num_fracs={self.num_fracs}: the branch must return (..., {self.dim}), got {shape}"
            )
        with autocast_off(mixed.device.type):
            out = branch_out.to(post.dtype).unflatten(-1, (self.num_fracs, self.frac_dim))
            return (mixed.to(post.dtype) + post.unsqueeze(-1) * out).to(mixed.dtype)

    def forward(self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        u, mixed, post = self.width(streams)
        return self.depth(mixed, post, branch(u))


def split_fracs(h: torch.Tensor, num_fracs: int) -> torch.Tensor:
    """``(..., C) -> (..., m, C/m)``: the hidden state as fractions (a view)."""
    return h.unflatten(-1, (num_fracs, h.shape[-1] // num_fracs))


def merge_fracs(x: torch.Tensor) -> torch.Tensor:
    """``(..., m, C/m) -> (..., C)``: the fractions concatenated (a view where ``x`` is contiguous)."""
    return x.flatten(-2)
