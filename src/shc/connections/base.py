"""The hyper-connection interface and the coefficient machinery shared by the constrained kinds.

One hyper-connection wraps one branch ``F`` (an attention or MLP sublayer) of a model whose
residual stream is widened to ``n`` streams ``x`` of shape ``(..., n, C)``::

    u    = sum_i H_pre[i] x_i                          (branch input)
    x'_j = sum_i H_res[i, j] x_i + H_post[j] F(u)

``width`` computes ``u``, the mixed residual and ``H_post``; ``depth`` adds the branch output
back. ``mixing`` exposes the three coefficient tensors so tools can read them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import kernels
from .ops import depth_add, project_rms, width_mix


class Mixing(NamedTuple):
    """Per-token coefficients ``pre (..., n)``, ``res (..., n, n)``, ``post (..., n)``.

    float32 for every streams dtype except float64 (see ``compute_dtype``)."""

    pre: torch.Tensor
    res: torch.Tensor
    post: torch.Tensor


def expand_streams(h: torch.Tensor, num_streams: int) -> torch.Tensor:
    """``(..., C) -> (..., n, C)``: every stream a copy of ``h``."""
    if num_streams < 1:
        raise ValueError(f"num_streams must be >= 1, got {num_streams}")
    return h.unsqueeze(-2).expand(*h.shape[:-1], num_streams, h.shape[-1]).contiguous()


def reduce_streams(x: torch.Tensor) -> torch.Tensor:
    """``(..., n, C) -> (..., C)``: the sum over streams."""
    return x.sum(dim=-2)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for every input dtype but float64 (kept, so float64 gradcheck is exact)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _float32_region(x: torch.Tensor):
    """Disable autocast so the small-matrix math stays in float32 (a no-op context when autocast
    is off: entering ``torch.autocast`` costs microseconds per call, which adds up in decode)."""
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


class HyperConnection(nn.Module):
    """Base class: ``n`` streams of width ``C`` mixed around one branch.

    Subclasses implement :meth:`mixing`. ``forward`` and ``width``/``depth`` are shared.
    """

    kind: str = ""

    def __init__(self, num_streams: int, dim: int, layer_index: int = 0, recompute: bool = False) -> None:
        super().__init__()
        if num_streams < 1:
            raise ValueError(f"num_streams must be >= 1, got {num_streams}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if layer_index < 0:
            raise ValueError(f"layer_index must be >= 0, got {layer_index}")
        self.num_streams = num_streams
        self.dim = dim
        self.layer_index = layer_index
        self.recompute = bool(recompute)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, num_streams={self.num_streams}, dim={self.dim}, "
            f"layer_index={self.layer_index}"
        )

    def register_constant(self, name: str, value: torch.Tensor) -> None:
        """A non-persistent buffer held in float64 whatever the module's dtype, plus a float32 copy
        (a plain attribute, refreshed on every ``.to``/``.cuda``).

        ``module.bfloat16()`` or ``.float()`` would otherwise round exact constants (the Helmert
        basis, ``J``); :meth:`constant` hands them out in the compute dtype without a cast per
        call (the float32 copy is rounded once from the float64 master).
        """
        if not hasattr(self, "_constant_names"):
            self._constant_names: list[str] = []
        self._constant_names.append(name)
        self.register_buffer(name, value.to(torch.float64), persistent=False)
        if not hasattr(self, "_float32_constants"):
            self._float32_constants: dict[str, torch.Tensor] = {}
        self._float32_constants[name] = getattr(self, name).float()  # a plain attribute, not a buffer

    def constant(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The constant ``name`` in ``dtype`` (float32 and float64 are stored, others cast)."""
        if dtype == torch.float32:
            return self._float32_constants[name]
        return getattr(self, name).to(dtype)

    def _apply(self, fn, recurse=True):
        saved = {name: getattr(self, name) for name in getattr(self, "_constant_names", [])}
        super()._apply(fn, recurse)
        for name, master in saved.items():
            moved = getattr(self, name)
            if moved.dtype != torch.float64:
                setattr(self, name, master.to(device=moved.device))
            self._float32_constants[name] = getattr(self, name).float()
        return self

    def check_streams(self, streams: torch.Tensor) -> None:
        expected = (self.num_streams, self.dim)
        if streams.dim() < 2 or tuple(streams.shape[-2:]) != expected:
            raise ValueError(
                f"{self.kind}: streams must have shape (..., n, dim) = (..., {expected[0]}, {expected[1]}), "
                f"got {tuple(streams.shape)}"
            )

    def mixing(self, streams: torch.Tensor) -> Mixing:
        raise NotImplementedError

    def width(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(u, mixed, h_post)``: branch input (..., C) and ``H_res``-mixed streams
        (..., n, C), both in the streams' dtype, and ``H_post`` (..., n) in ``compute_dtype``.

        With ``recompute=True`` (and gradients enabled) nothing computed here is kept for
        backward except the streams themselves: the coefficient math and the mixing run again
        in backward (``torch.utils.checkpoint``), trading one more forward of the width
        connection for its saved activations."""
        self.check_streams(streams)
        if streams.is_cuda:  # fused Triton kernels (shc.kernels) when usable, else PyTorch below
            fused = kernels.maybe_width(self, streams)
            if fused is not None:
                return fused
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self.width_fast, streams, use_reentrant=False)
        return self.width_fast(streams)

    def width_fast(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The width connection itself: coefficients, then one mixing pass over the streams."""
        pre, res, post = self.mixing(streams)
        u, mixed = width_mix(pre, res, streams)
        return u, mixed, post

    def depth(self, mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
        """``x'_j = mixed_j + H_post[j] * branch_out``, computed in ``h_post``'s dtype, in ``mixed``'s."""
        if mixed.is_cuda:  # fused Triton kernel (shc.kernels) when usable, else PyTorch below
            fused = kernels.maybe_depth(self, mixed, h_post, branch_out)
            if fused is not None:
                return fused
        return depth_add(mixed, h_post, branch_out)

    def forward(self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        u, mixed, h_post = self.width(streams)
        return self.depth(mixed, h_post, branch(u))


def _pm_one_bias(num_streams: int, layer_index: int) -> torch.Tensor:
    """``+1`` at ``layer_index mod n``, ``-1`` elsewhere (the H_pre / H_post static bias)."""
    b = -torch.ones(num_streams)
    b[layer_index % num_streams] = 1.0
    return b


class CoefficientConnection(HyperConnection):
    """Machinery shared by mHC, mHC-lite, KromHC and sHC (DESIGN.md section 2).

    ``x~ = RMSNorm(flatten(x))`` over ``n*C`` features; one fused zero-initialised projection
    ``d = x~ @ W`` gives the raw coefficients of every group; per group ``coef = s * d + b`` with
    a scalar gate ``s`` (init 0.01) and a static bias ``b``::

        H_pre  = sigmoid(s_pre d_pre + b_pre)
        H_post = 2 sigmoid(s_post d_post + b_post)
        H_res  = method-specific function of the residual coefficients

    The RMSNorm is folded into the projection: ``x~ @ W = rsqrt(mean(x^2) + eps) * (x @ (g W))``,
    so the normalised ``n*C`` tensor is never materialised.

    Subclasses set ``res_groups`` (sizes of the residual coefficient groups, one gate each),
    ``res_bias()`` and ``res_matrix(coefs)``.
    """

    def __init__(
        self, num_streams: int, dim: int, layer_index: int = 0, eps: float = 1e-6, recompute: bool = False
    ) -> None:
        super().__init__(num_streams, dim, layer_index, recompute)
        n = num_streams
        self.eps = eps
        groups = (n, n, *self.res_groups())
        self.group_sizes = groups
        total = sum(groups)
        self.norm_weight = nn.Parameter(torch.ones(n * dim))
        self.proj = nn.Parameter(torch.zeros(n * dim, total))
        self.gates = nn.Parameter(torch.full((len(groups),), 0.01))
        bias = torch.cat([_pm_one_bias(n, layer_index), _pm_one_bias(n, layer_index), self.res_bias()])
        self.bias = nn.Parameter(bias)
        # which gate scales each coefficient
        gate_index = torch.tensor([g for g, size in enumerate(groups) for _ in range(size)], dtype=torch.long)
        self.register_buffer("gate_index", gate_index, persistent=False)

    # --- method-specific part -------------------------------------------------------------
    def res_groups(self) -> tuple[int, ...]:
        raise NotImplementedError

    def res_bias(self) -> torch.Tensor:
        raise NotImplementedError

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        """``H_res`` (..., n, n) from the gated+biased residual coefficient groups."""
        raise NotImplementedError

    # --- shared part ----------------------------------------------------------------------
    def coefficients(self, streams: torch.Tensor) -> torch.Tensor:
        """``s * (x~ @ W) + b`` for every group, in ``compute_dtype``, shape (..., total)."""
        dt = compute_dtype(streams)
        with _float32_region(streams):
            flat = streams.reshape(*streams.shape[:-2], -1)
            weight = self.norm_weight.to(dt).unsqueeze(-1) * self.proj.to(dt)
            raw = project_rms(flat, weight, self.eps)
            return raw * self.gates.to(dt)[self.gate_index] + self.bias.to(dt)

    def mixing(self, streams: torch.Tensor) -> Mixing:
        self.check_streams(streams)
        coef = self.coefficients(streams)
        with _float32_region(streams):
            parts = list(torch.split(coef, self.group_sizes, dim=-1))
            pre = torch.sigmoid(parts[0])
            post = 2 * torch.sigmoid(parts[1])
            res = self.res_matrix(parts[2:])
        return Mixing(pre, res, post)
