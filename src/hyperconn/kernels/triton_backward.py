"""Triton kernels of the width step's backward (imported only when Triton is).

Layout: streams ``x`` are ``(T, n, C)`` contiguous (leading dims flattened), so token ``t`` is
one row of ``n*C`` elements; every kernel works on a block of ``BT`` tokens and walks the feature
axis in chunks of ``BK``. ``NP`` is ``n`` padded to a power of two, ``NCP`` the coefficient count
padded likewise (padded weight columns are zero). All arithmetic is float32; loads are cast up,
stores cast down to the output's dtype. The two gradient dots take float32 operands at ``DOT_PRECISION``.

- ``mix_bwd_coef_kernel``: ``dpre_i = <du, x_i>``, ``dH[i,j] = <dmixed_j, x_i>`` per token.
- ``width_bwd_dx_kernel``: ``dx_i = pre_i du + sum_j H[i,j] dmixed_j`` (``WITH_MIX``)
  ``+ dy @ (g W)_i^T + alpha x_i`` (``WITH_PROJ``; ``dy = draw * inv_rms`` and
  ``alpha = -inv_rms^2 <draw, raw> / (n C)`` come from the caller).
- ``proj_bwd_weight_kernel``: ``d(gW) = x^T dy``, a reduction over tokens split into ``SPLIT``
  partial sums.

The per-token coefficient math is differentiated by PyTorch autograd (``fused_width``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_forward import _load_entries


@triton.jit
def _mix_grad_coefficients(x_ptr, du_ptr, dmixed_ptr, row, tmask, C: tl.constexpr, N: tl.constexpr,
                           NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """``dpre (BT, NP)`` and ``dres (BT, NP, NP)``: ``<du, x_i>`` and ``<dmixed_j, x_i>`` per token."""
    r = tl.arange(0, NP)
    dpre = tl.zeros((BT, NP), tl.float32)
    dres = tl.zeros((BT, NP, NP), tl.float32)
    for c0 in range(0, C, BK):
        c = c0 + tl.arange(0, BK)
        m2 = tmask[:, None] & (c[None, :] < C)
        du = tl.load(du_ptr + row[:, None] * C + c[None, :], mask=m2, other=0.0).to(tl.float32)
        xs = ()
        dms = ()
        for i in tl.static_range(N):
            offs = row[:, None] * (N * C) + i * C + c[None, :]
            xs = xs + (tl.load(x_ptr + offs, mask=m2, other=0.0).to(tl.float32),)
            dms = dms + (tl.load(dmixed_ptr + offs, mask=m2, other=0.0).to(tl.float32),)
        for i in tl.static_range(N):
            dpre += tl.where(r[None, :] == i, tl.sum(du * xs[i], axis=1)[:, None], 0.0)
            for j in tl.static_range(N):
                dot_ij = tl.sum(xs[i] * dms[j], axis=1)  # <x_i, dmixed_j>
                sel = (r[:, None] == i) & (r[None, :] == j)
                dres += tl.where(sel[None, :, :], dot_ij[:, None, None], 0.0)
    return dpre, dres


@triton.jit
def mix_bwd_coef_kernel(
    x_ptr, du_ptr, dmixed_ptr, dpre_ptr, dres_ptr, T,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    x_ptr += start * N * C
    du_ptr += start * C
    dmixed_ptr += start * N * C
    dpre_ptr += start * N
    dres_ptr += start * N * N
    r = tl.arange(0, NP)
    rm = r < N
    dpre, dres = _mix_grad_coefficients(x_ptr, du_ptr, dmixed_ptr, row, tmask, C, N, NP, BT, BK)
    tl.store(dpre_ptr + row[:, None] * N + r[None, :], dpre, mask=tmask[:, None] & rm[None, :])
    tl.store(
        dres_ptr + row[:, None, None] * (N * N) + r[None, :, None] * N + r[None, None, :], dres,
        mask=tmask[:, None, None] & rm[None, :, None] & rm[None, None, :],
    )


@triton.jit
def _dx_tile(x_ptr, du_ptr, dmixed_ptr, wg_ptr, dx_ptr, pre, res, dy, alpha, row, tmask,
             C: tl.constexpr, N: tl.constexpr, NCP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
             WITH_MIX: tl.constexpr, WITH_PROJ: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``dx_i = pre_i du + sum_j H[i,j] dmixed_j`` (``WITH_MIX``; ``pre``/``res`` tuples of (BT,))
    ``+ alpha x_i + dy @ (gW)_i^T`` (``WITH_PROJ``) for one token block."""
    cols = tl.arange(0, NCP)
    for c0 in range(0, C, BK):
        c = c0 + tl.arange(0, BK)
        cmask = c < C
        m2 = tmask[:, None] & cmask[None, :]
        if WITH_MIX:
            du = tl.load(du_ptr + row[:, None] * C + c[None, :], mask=m2, other=0.0).to(tl.float32)
            dms = ()
            for j in tl.static_range(N):
                dm = tl.load(dmixed_ptr + row[:, None] * (N * C) + j * C + c[None, :], mask=m2, other=0.0)
                dms = dms + (dm.to(tl.float32),)
        for i in tl.static_range(N):
            dx = tl.zeros((BT, BK), tl.float32)
            if WITH_MIX:
                dx += pre[i][:, None] * du
                for j in tl.static_range(N):
                    dx += res[i * N + j][:, None] * dms[j]
            if WITH_PROJ:
                xi = tl.load(x_ptr + row[:, None] * (N * C) + i * C + c[None, :], mask=m2, other=0.0)
                dx += alpha[:, None] * xi.to(tl.float32)
                wt = tl.load(wg_ptr + (i * C + c)[None, :] * NCP + cols[:, None], mask=cmask[None, :], other=0.0)
                dx += tl.dot(dy, wt, input_precision=DOT_PRECISION)
            tl.store(dx_ptr + row[:, None] * (N * C) + i * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m2)


@triton.jit
def width_bwd_dx_kernel(
    x_ptr, du_ptr, dmixed_ptr, pre_ptr, res_ptr, dy_ptr, alpha_ptr, wg_ptr, dx_ptr, T,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, NCP: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, WITH_MIX: tl.constexpr, WITH_PROJ: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    x_ptr += start * N * C
    du_ptr += start * C
    dmixed_ptr += start * N * C
    pre_ptr += start * N
    res_ptr += start * N * N
    dy_ptr += start * NCP
    alpha_ptr += start
    dx_ptr += start * N * C
    cols = tl.arange(0, NCP)
    pre = ()
    res = ()
    dy = tl.zeros((BT, NCP), tl.float32)
    alpha = tl.zeros((BT,), tl.float32)
    if WITH_MIX:
        pre = _load_entries(pre_ptr, row, tmask, N)
        res = _load_entries(res_ptr, row, tmask, N * N)
    if WITH_PROJ:
        dy = tl.load(dy_ptr + row[:, None] * NCP + cols[None, :], mask=tmask[:, None], other=0.0)
        alpha = tl.load(alpha_ptr + row, mask=tmask, other=0.0)
    _dx_tile(x_ptr, du_ptr, dmixed_ptr, wg_ptr, dx_ptr, pre, res, dy, alpha, row, tmask,
             C, N, NCP, BT, BK, WITH_MIX, WITH_PROJ, DOT_PRECISION)


@triton.jit
def proj_bwd_weight_kernel(
    x_ptr, dy_ptr, out_ptr, T, R, tokens_per_split,
    NCP: tl.constexpr, BR: tl.constexpr, BT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """``out[split, r, :] = sum_{t in split} x[t, r] dy[t, :]`` with ``x`` viewed as (T, R)."""
    pid_r = tl.program_id(0)
    split = tl.program_id(1)
    rr = pid_r * BR + tl.arange(0, BR)
    rmask = rr < R
    cols = tl.arange(0, NCP)
    acc = tl.zeros((BR, NCP), tl.float32)
    t_start = split * tokens_per_split
    for t0 in range(0, tokens_per_split, BT):
        t = t_start + t0 + tl.arange(0, BT)
        tmask = (t < T) & (t0 + tl.arange(0, BT) < tokens_per_split)
        row = t.to(tl.int64)
        xt = tl.load(x_ptr + row[None, :] * R + rr[:, None], mask=rmask[:, None] & tmask[None, :], other=0.0)
        dy = tl.load(dy_ptr + row[:, None] * NCP + cols[None, :], mask=tmask[:, None], other=0.0)
        acc += tl.dot(xt.to(tl.float32), dy, input_precision=DOT_PRECISION)
    offs = split.to(tl.int64) * R * NCP + rr[:, None] * NCP + cols[None, :]
    tl.store(out_ptr + offs, acc, mask=rmask[:, None])
