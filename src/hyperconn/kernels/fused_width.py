"""Autograd functions around the width kernels: ``streams -> (u, mixed, h_post)``.

Three functions, all on streams flattened to ``(T, n, C)``:

- :class:`ShcWidth` (sHC, n = 3, 4): ONE forward kernel does the RMS statistics, the projection
  ``x @ (g W)`` with its ``inv_rms`` epilogue, the whole sHC coefficient math and the mixing
  (``SPLIT_MIX``: the coefficients are written and a second kernel mixes). Backward: a kernel
  reduces ``dpre``/``dH`` over the features; the coefficient math is recomputed in PyTorch from
  the saved per-token ``raw`` and differentiated by autograd; one kernel writes ``dx`` (mixing
  part + projection part + RMS part) and one reduces the projection weight gradient ``x^T dy``.
  Saved for backward: the streams and the per-token ``raw`` coefficients and ``inv_rms``.
  (A hand-derived Triton coefficient backward passed under the interpreter but gave gradients
  wrong by up to 28% on an H200; it was removed: docs/results/gpu.)
- :class:`Projection` + :class:`Mix` (every other kind): the projection kernel gives ``raw``,
  the kind's own PyTorch code turns it into coefficients (autograd as usual), the mix kernel
  mixes; each has its own backward kernels.

The gradient of ``g W`` is returned to autograd, which maps it onto ``norm_weight`` and ``proj``.
"""

from __future__ import annotations

import contextlib

import torch
import triton
from torch.autograd.function import once_differentiable

from . import triton_backward as KB
from . import triton_forward as KF
from .interface import CoefficientMath

BLOCK_T = 32  # tokens per program (tl.dot needs >= 16); each program re-reads g W (n C x 32) from L2
BLOCK_K = 64  # features per chunk
BLOCK_R = 64  # rows of g W per program in the weight-gradient kernel
NUM_WARPS = 4
SPLIT_MIX = False  # sHC: write the coefficients and mix in a second kernel instead of in the same one



def _pow2(v: int, least: int) -> int:
    return max(triton.next_power_of_2(v), least)


def _device(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _dot_precision(x: torch.Tensor) -> str:
    """Tensor-core TF32 dots, except float32 streams under PyTorch's default
    ``torch.get_float32_matmul_precision() == "highest"``: three-pass TF32 ("tf32x3", float32
    accuracy). bfloat16/float16 stream values are exact in TF32; only ``g W`` is rounded."""
    if x.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def _padded_weight(wg: torch.Tensor, ncp: int) -> torch.Tensor:
    out = wg.new_zeros(wg.shape[0], ncp, dtype=torch.float32)
    out[:, : wg.shape[1]] = wg.detach()
    return out


def _padded(v: torch.Tensor, ncp: int) -> torch.Tensor:
    out = v.new_zeros(ncp, dtype=torch.float32)
    out[: v.shape[0]] = v.detach()
    return out


def _grid(t: int):
    return (triton.cdiv(t, BLOCK_T),)


def _projection_forward(x, wg_pad, eps, fuse_shc=False, scale=None, bias=None, gamma=None):
    """Launch the width forward kernel; returns raw (T, NCP), inv_rms (T,) [, post, u, mixed]."""
    t, n, c = x.shape
    ncp = wg_pad.shape[1]
    raw = x.new_empty(t, ncp, dtype=torch.float32)
    inv_rms = x.new_empty(t, dtype=torch.float32)
    split = fuse_shc and SPLIT_MIX
    pre = res = raw  # unused pointers unless split
    if fuse_shc:
        post = x.new_empty(t, n, dtype=torch.float32)
        u = x.new_empty(t, c)
        mixed = torch.empty_like(x)
        if split:
            pre = x.new_empty(t, n, dtype=torch.float32)
            res = x.new_empty(t, n, n, dtype=torch.float32)
    else:
        post = u = mixed = scale = bias = gamma = raw  # unused pointers
    with _device(x):
        KF.width_fwd_kernel[_grid(t)](
            x, wg_pad, scale, bias, gamma, raw, inv_rms, post, u, mixed, pre, res, t, eps,
            C=c, N=n, NP=_pow2(n, 2), NCP=ncp, BT=BLOCK_T, BK=BLOCK_K, FUSE_SHC=fuse_shc, MIX=not split,
            DOT_PRECISION=_dot_precision(x), num_warps=NUM_WARPS,
        )
    if split:
        _mix_forward(x, pre, res, u, mixed)
    if fuse_shc:
        return raw, inv_rms, post, u, mixed
    return raw, inv_rms


def _mix_forward(x, pre, res, u, mixed):
    t, n, c = x.shape
    with _device(x):
        KF.mix_fwd_kernel[_grid(t)](
            x, pre, res, u, mixed, t, C=c, N=n, NP=_pow2(n, 2), BT=BLOCK_T, BK=BLOCK_K, num_warps=NUM_WARPS,
        )


def _mix_backward_coefficients(x, du, dmixed):
    t, n, c = x.shape
    dpre = x.new_empty(t, n, dtype=torch.float32)
    dres = x.new_empty(t, n, n, dtype=torch.float32)
    with _device(x):
        KB.mix_bwd_coef_kernel[_grid(t)](
            x, du, dmixed, dpre, dres, t, C=c, N=n, NP=_pow2(n, 2), BT=BLOCK_T, BK=BLOCK_K,
            num_warps=NUM_WARPS,
        )
    return dpre, dres


def _projection_grads(draw, raw, inv_rms, n, c, ncp):
    """``dy = draw * inv_rms`` (padded to NCP) and ``alpha = -inv_rms^2 <draw, raw> / (nC)``."""
    total = draw.shape[1]
    dy = draw.new_zeros(draw.shape[0], ncp, dtype=torch.float32)
    dy[:, :total] = draw * inv_rms[:, None]
    alpha = -(draw * raw[:, :total]).sum(-1) * inv_rms.square() / (n * c)
    return dy, alpha.contiguous()


def _dx(x, dx_dtype, du=None, dmixed=None, pre=None, res=None, dy=None, alpha=None, wg_pad=None):
    t, n, c = x.shape
    with_mix, with_proj = du is not None, dy is not None
    dx = torch.empty(x.shape, dtype=dx_dtype, device=x.device)
    ncp = wg_pad.shape[1] if with_proj else 16
    dummy = x
    with _device(x):
        KB.width_bwd_dx_kernel[_grid(t)](
            x, du if with_mix else dummy, dmixed if with_mix else dummy,
            pre if with_mix else dummy, res if with_mix else dummy,
            dy if with_proj else dummy, alpha if with_proj else dummy, wg_pad if with_proj else dummy,
            dx, t, C=c, N=n, NP=_pow2(n, 2), NCP=ncp, BT=BLOCK_T, BK=BLOCK_K,
            WITH_MIX=with_mix, WITH_PROJ=with_proj, DOT_PRECISION=_dot_precision(x), num_warps=NUM_WARPS,
        )
    return dx


def _weight_grad(x, dy, total):
    """``(x viewed as (T, nC))^T @ dy``, (nC, total) float32."""
    t, n, c = x.shape
    rows = n * c
    ncp = dy.shape[1]
    row_blocks = triton.cdiv(rows, BLOCK_R)
    # enough programs to fill a GPU: split the token reduction into partial sums
    split = max(1, min(triton.cdiv(t, 4 * BLOCK_T), triton.cdiv(512, row_blocks)))
    per_split = triton.cdiv(t, split)
    partial = x.new_empty(split, rows, ncp, dtype=torch.float32)
    with _device(x):
        KB.proj_bwd_weight_kernel[(row_blocks, split)](
            x, dy, partial, t, rows, per_split, NCP=ncp, BR=BLOCK_R, BT=BLOCK_T, DOT_PRECISION=_dot_precision(x),
            num_warps=NUM_WARPS,
        )
    return partial.sum(0)[:, :total]


def _zeros_if_none(g, like, dtype=None):
    if g is None:
        return torch.zeros(like.shape, dtype=dtype or like.dtype, device=like.device)
    return g.contiguous()


class ShcWidth(torch.autograd.Function):
    """Fused sHC width: ``(x, gW, scale, bias, gamma) -> (u, mixed, h_post)``.

    ``coefficient_math`` maps gated+biased coefficients (T, total) to ``(pre, res, post)`` in
    PyTorch (the connection's own code); it is used only in backward, to differentiate the
    small per-token coefficient math. ``gamma`` must be the tensor that function reads.
    """

    @staticmethod
    def forward(ctx, x, wg, scale, bias, gamma, coefficient_math: CoefficientMath, eps: float):
        t, n, c = x.shape
        total = wg.shape[1]
        ncp = _pow2(total, 16)
        wg_pad = _padded_weight(wg, ncp)
        gamma32 = gamma.detach().float().contiguous()
        raw, inv_rms, post, u, mixed = _projection_forward(
            x, wg_pad, eps, fuse_shc=True, scale=_padded(scale, ncp), bias=_padded(bias, ncp), gamma=gamma32
        )
        ctx.save_for_backward(x, wg_pad, raw, inv_rms, scale, bias, gamma)
        ctx.coefficient_math = coefficient_math
        ctx.total = total
        return u, mixed, post

    @staticmethod
    @once_differentiable
    def backward(ctx, du, dmixed, dpost):
        x, wg_pad, raw, inv_rms, scale, bias, gamma = ctx.saved_tensors
        t, n, c = x.shape
        total = ctx.total
        du = _zeros_if_none(du, x[:, 0])
        dmixed = _zeros_if_none(dmixed, x)
        dpost = _zeros_if_none(dpost, inv_rms.new_empty(t, n))
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            raw_ = raw[:, :total].detach().requires_grad_()
            scale_ = scale.detach().float().requires_grad_()
            bias_ = bias.detach().float().requires_grad_()
            pre, res, post = ctx.coefficient_math(raw_ * scale_ + bias_)
            dpre, dres = _mix_backward_coefficients(x, du, dmixed)
            inputs = [raw_, scale_, bias_] + ([gamma] if gamma.requires_grad else [])
            grads = torch.autograd.grad((pre, res, post), inputs, (dpre, dres, dpost.float()), allow_unused=True)
        draw, dscale, dbias = grads[:3]
        dgamma = grads[3] if gamma.requires_grad else None
        dy, alpha = _projection_grads(draw, raw, inv_rms, n, c, wg_pad.shape[1])
        dx = _dx(
            x, x.dtype, du=du, dmixed=dmixed, pre=pre.detach().float().contiguous(),
            res=res.detach().float().contiguous(), dy=dy, alpha=alpha, wg_pad=wg_pad,
        )
        dwg = _weight_grad(x, dy, total)
        return dx, dwg, dscale.to(scale.dtype), dbias.to(bias.dtype), dgamma, None, None


class Projection(torch.autograd.Function):
    """``raw = rsqrt(mean(x^2) + eps) * (x @ gW)``, (T, total) float32."""

    @staticmethod
    def forward(ctx, x, wg, eps: float):
        total = wg.shape[1]
        wg_pad = _padded_weight(wg, _pow2(total, 16))
        raw, inv_rms = _projection_forward(x, wg_pad, eps)
        ctx.save_for_backward(x, wg_pad, raw, inv_rms)
        ctx.total = total
        return raw[:, :total]

    @staticmethod
    @once_differentiable
    def backward(ctx, draw):
        x, wg_pad, raw, inv_rms = ctx.saved_tensors
        t, n, c = x.shape
        dy, alpha = _projection_grads(draw.float(), raw, inv_rms, n, c, wg_pad.shape[1])
        dx = _dx(x, x.dtype, dy=dy, alpha=alpha, wg_pad=wg_pad)
        return dx, _weight_grad(x, dy, ctx.total), None


class Mix(torch.autograd.Function):
    """``u = sum_i pre_i x_i``, ``mixed_j = sum_i res[i, j] x_i`` from given coefficients."""

    @staticmethod
    def forward(ctx, x, pre, res):
        t, n, c = x.shape
        pre32 = pre.detach().float().contiguous()
        res32 = res.detach().float().contiguous()
        u = x.new_empty(t, c)
        mixed = torch.empty_like(x)
        _mix_forward(x, pre32, res32, u, mixed)
        ctx.save_for_backward(x, pre32, res32)
        ctx.dtypes = (pre.dtype, res.dtype)
        return u, mixed

    @staticmethod
    @once_differentiable
    def backward(ctx, du, dmixed):
        x, pre, res = ctx.saved_tensors
        du = _zeros_if_none(du, x[:, 0])
        dmixed = _zeros_if_none(dmixed, x)
        dpre, dres = _mix_backward_coefficients(x, du, dmixed)
        dx = _dx(x, x.dtype, du=du, dmixed=dmixed, pre=pre, res=res)
        return dx, dpre.to(ctx.dtypes[0]), dres.to(ctx.dtypes[1])
