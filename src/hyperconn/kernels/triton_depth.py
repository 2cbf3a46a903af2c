"""Triton kernels of the depth step (imported only when Triton is).

Layout: streams ``x`` are ``(T, n, C)`` contiguous (leading dims flattened), so token ``t`` is
one row of ``n*C`` elements; every kernel works on a block of ``BT`` tokens and walks the feature
axis in chunks of ``BK``. ``NP`` is ``n`` padded to a power of two, ``NCP`` the coefficient count
padded likewise (padded weight columns are zero). All arithmetic is float32; loads are cast up,
stores cast down to the output's dtype.

- ``depth_fwd_kernel``: ``out_j = mixed_j + post_j * b``.
- ``depth_bwd_kernel``: ``db = sum_j post_j dout_j``, ``dpost_j = <dout_j, b>``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_forward import _load_entries


@triton.jit
def depth_fwd_kernel(
    mixed_ptr, post_ptr, b_ptr, out_ptr, T,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    mixed_ptr += start * N * C
    post_ptr += start * N
    b_ptr += start * C
    out_ptr += start * N * C
    post = _load_entries(post_ptr, row, tmask, N)
    for c0 in range(0, C, BK):
        c = c0 + tl.arange(0, BK)
        m2 = tmask[:, None] & (c[None, :] < C)
        b = tl.load(b_ptr + row[:, None] * C + c[None, :], mask=m2, other=0.0).to(tl.float32)
        for j in tl.static_range(N):
            offs = row[:, None] * (N * C) + j * C + c[None, :]
            mixed = tl.load(mixed_ptr + offs, mask=m2, other=0.0).to(tl.float32)
            out = mixed + post[j][:, None] * b
            tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def depth_bwd_kernel(
    dout_ptr, post_ptr, b_ptr, db_ptr, dpost_ptr, T,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    dout_ptr += start * N * C
    post_ptr += start * N
    b_ptr += start * C
    db_ptr += start * C
    dpost_ptr += start * N
    r = tl.arange(0, NP)
    post = _load_entries(post_ptr, row, tmask, N)
    dpost = tl.zeros((BT, NP), tl.float32)
    for c0 in range(0, C, BK):
        c = c0 + tl.arange(0, BK)
        m2 = tmask[:, None] & (c[None, :] < C)
        b = tl.load(b_ptr + row[:, None] * C + c[None, :], mask=m2, other=0.0).to(tl.float32)
        db = tl.zeros((BT, BK), tl.float32)
        for j in tl.static_range(N):
            dout = tl.load(dout_ptr + row[:, None] * (N * C) + j * C + c[None, :], mask=m2, other=0.0)
            dout = dout.to(tl.float32)
            dpost += tl.where(r[None, :] == j, tl.sum(dout * b, axis=1)[:, None], 0.0)
            db += post[j][:, None] * dout
        tl.store(db_ptr + row[:, None] * C + c[None, :], db.to(db_ptr.dtype.element_ty), mask=m2)
    tl.store(dpost_ptr + row[:, None] * N + r[None, :], dpost, mask=tmask[:, None] & (r[None, :] < N))
