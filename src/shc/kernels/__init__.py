"""Optional fused Triton kernels for the hyper-connection ``width`` and ``depth`` steps.

On a GPU a hyper-connection is pure memory traffic around a few tiny matrices per token; the
PyTorch path reads the ``(T, n, C)`` streams several times and launches dozens of small kernels.
Here:

- sHC (n <= 4), forward: ONE kernel per token block reads the streams for the RMS statistics and
  the projection ``x @ (g W)``, computes every coefficient in registers (gates, biases, sigmoids,
  tanh, closed-form Cayley, ``J + P E P^T``), writes ``h_post`` and mixes the same (L2-resident)
  block into ``u`` and the ``n`` mixed streams.
- Every other coefficient kind (mhc, mhc_lite, kromhc, sHC with n > 4): the projection kernel,
  the kind's own PyTorch coefficient math on ``(T, few)`` tensors, then the mixing kernel.
  hc: its PyTorch coefficients, then the mixing kernel.
- depth (every kind but residual): one kernel ``x'_j = mixed_j + h_post_j F(u)``.
- sHC (n <= 4), backward: ONE kernel per token block reduces ``dpre``/``dH`` over the features,
  runs the hand-derived backward of the coefficient math in registers (through the closed-form
  Cayley transform) and writes ``dx``; a second kernel reduces the projection weight gradient
  ``x^T dy`` over tokens; PyTorch sums the per-token gate/bias/gamma gradients (three tiny ops).
- Other kinds, backward: Triton kernels for every pass over the streams; their coefficient math
  is differentiated by PyTorch autograd. Depth backward: one kernel. See :mod:`shc.kernels.fused_width`.

Dispatch: :func:`available` says whether the fused path can run for a tensor (CUDA tensor and
Triton importable, or Triton's CPU interpreter forced with ``TRITON_INTERPRET=1``, used by the
tests). The connections call :func:`maybe_width` / :func:`maybe_depth` for CUDA tensors only,
outside ``torch.compile`` (which fuses the PyTorch path itself); they return ``None`` to fall back.
Force the PyTorch path with ``SHC_DISABLE_TRITON=1`` or ``shc.kernels.use_triton = False``.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["available", "depth", "maybe_depth", "maybe_width", "supports", "use_triton", "width"]

use_triton: bool = True
"""Module switch: ``False`` forces the PyTorch path everywhere."""

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_STREAMS = 16


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_active() -> bool:
    """``TRITON_INTERPRET=1``: Triton runs kernels on CPU tensors (slowly), for tests."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def enabled() -> bool:
    """The switch: ``use_triton`` and not ``SHC_DISABLE_TRITON=1``."""
    return use_triton and os.environ.get("SHC_DISABLE_TRITON", "0").lower() not in ("1", "true", "yes")


def available(tensor: torch.Tensor) -> bool:
    """Whether the fused kernels can run on ``tensor``'s device (ignores shapes and kinds)."""
    if not (enabled() and _triton_importable()):
        return False
    return tensor.is_cuda or (tensor.device.type == "cpu" and interpreter_active())


def supports(conn, streams: torch.Tensor) -> bool:
    """Whether the fused width/depth handle this connection and streams tensor."""
    from ..connections.base import CoefficientConnection
    from ..connections.hc import HC

    return (
        isinstance(conn, (CoefficientConnection, HC))
        and 2 <= conn.num_streams <= _MAX_STREAMS
        and streams.dtype in _DTYPES
        and streams.dim() >= 2
        and tuple(streams.shape[-2:]) == (conn.num_streams, conn.dim)
    )


def _coefficient_math(conn):
    """``coef (..., total) -> (pre, res, post)``: the second half of ``CoefficientConnection.mixing``."""

    def math(coef: torch.Tensor):
        parts = list(torch.split(coef, conn.group_sizes, dim=-1))
        return torch.sigmoid(parts[0]), conn.res_matrix(parts[2:]), 2 * torch.sigmoid(parts[1])

    return math


def width(conn, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused ``conn.width(streams)``: ``(u (..., C), mixed (..., n, C), h_post (..., n) fp32)``."""
    from ..connections.base import CoefficientConnection
    from ..connections.shc import SHC
    from .fused_width import Mix, Projection, ShcWidth

    if not supports(conn, streams):
        raise ValueError(f"shc.kernels.width: unsupported connection {conn!r} / streams {tuple(streams.shape)}")
    n, c = conn.num_streams, conn.dim
    lead = streams.shape[:-2]
    x = streams.reshape(-1, n, c).contiguous()
    if isinstance(conn, CoefficientConnection):
        math = _coefficient_math(conn)
        with torch.autocast(device_type=x.device.type, enabled=False):
            wg = conn.norm_weight.float()[:, None] * conn.proj.float()
            scale = conn.gates.float()[conn.gate_index]
            bias = conn.bias.float()
            if isinstance(conn, SHC) and n <= 4:
                u, mixed, post = ShcWidth.apply(x, wg, scale, bias, conn.gamma, math, conn.eps)
            else:
                raw = Projection.apply(x, wg, conn.eps)
                pre, res, post = math(raw * scale + bias)
                u, mixed = Mix.apply(x, pre, res)
    else:
        pre, res, post = conn.mixing(streams)
        u, mixed = Mix.apply(x, pre.reshape(-1, n), res.reshape(-1, n, n))
    return u.reshape(*lead, c), mixed.reshape(*lead, n, c), post.reshape(*lead, n)


def depth(mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
    """The fused ``conn.depth``: ``mixed_j + h_post_j * branch_out``, in ``mixed``'s dtype."""
    from .fused_depth import Depth

    n, c = mixed.shape[-2:]
    if h_post.shape != mixed.shape[:-1] or branch_out.shape != (*mixed.shape[:-2], c):
        raise ValueError(
            f"shc.kernels.depth: shapes mixed {tuple(mixed.shape)}, h_post {tuple(h_post.shape)}, "
            f"branch_out {tuple(branch_out.shape)} do not match (..., n, C), (..., n), (..., C)"
        )
    out = Depth.apply(
        mixed.reshape(-1, n, c).contiguous(), h_post.reshape(-1, n), branch_out.reshape(-1, c).contiguous()
    )
    return out.reshape(mixed.shape)


def _usable(tensor: torch.Tensor) -> bool:
    # is_compiling() first: under torch.compile nothing else here is traced
    return not torch.compiler.is_compiling() and available(tensor)


def maybe_width(conn, streams: torch.Tensor):
    """``width(conn, streams)`` when the fused path applies, else ``None`` (use PyTorch)."""
    if _usable(streams) and supports(conn, streams):
        return width(conn, streams)
    return None


def maybe_depth(conn, mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor):
    """``depth(mixed, h_post, branch_out)`` when the fused path applies, else ``None``."""
    if (
        _usable(mixed)
        and supports(conn, mixed)
        and branch_out.dtype in _DTYPES
        and h_post.shape == mixed.shape[:-1]
        and branch_out.shape == (*mixed.shape[:-2], mixed.shape[-1])
    ):
        return depth(mixed, h_post, branch_out)
    return None
