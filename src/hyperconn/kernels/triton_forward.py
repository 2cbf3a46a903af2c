"""Triton kernels of the width step's forward (imported only when Triton is).

Layout: streams ``x`` are ``(T, n, C)`` contiguous (leading dims flattened), so token ``t`` is
one row of ``n*C`` elements; every kernel works on a block of ``BT`` tokens and walks the feature
axis in chunks of ``BK``. ``NP`` is ``n`` padded to a power of two, ``NCP`` the coefficient count
padded likewise (padded weight columns are zero). All arithmetic is float32; loads are cast up,
stores cast down to the output's dtype. The projection dot takes float32 operands at ``DOT_PRECISION``
("tf32", or "tf32x3" ~ float32 accuracy at 3x the tensor-core work).

- ``width_fwd_kernel``: per token block, pass 1 reads the streams once for the RMS statistics
  and the projection ``y = x @ (g W)`` (a ``tl.dot``); ``raw = y * rsqrt(mean(x^2) + eps)``.
  ``FUSE_SHC`` then, still in registers: ``coef = s * raw + b``, the sHC coefficients
  (sigmoids, gated tanh, closed-form 3x3 Cayley, ``J + (PU) diag(sigma) (PV)^T``) and pass 2
  mixes the (L2-hot) token block into ``u = sum_i pre_i x_i`` and ``mixed_j = sum_i H[i,j] x_i``
  (``MIX``; else it writes the per-token coefficients for ``mix_fwd_kernel``).
  Without ``FUSE_SHC`` it only writes ``raw`` and ``inv_rms`` (the projection for other kinds).
- ``mix_fwd_kernel``: the mixing pass alone, from precomputed per-token coefficients.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sigmoid(v):
    return 1.0 / (1.0 + tl.exp(-v))


@triton.jit
def _tanh(v):
    return 2.0 / (1.0 + tl.exp(-2.0 * v)) - 1.0


@triton.jit
def _column(mat, cols, j):
    """``mat[:, j]`` of a (BT, NCP) register tile, as a (BT,) vector."""
    return tl.sum(tl.where(cols[None, :] == j, mat, 0.0), axis=1)


@triton.jit
def _columns(mat, cols, start, NP: tl.constexpr):
    """``mat[:, start:start+NP]`` of a (BT, NCP) register tile (zero past its end)."""
    r = tl.arange(0, NP)
    sel = (cols[None, :] == (start + r)[:, None]).to(tl.float32)  # (NP, NCP)
    return tl.sum(mat[:, None, :] * sel[None, :, :], axis=2)


@triton.jit
def _helmert_column(l: tl.constexpr, M: tl.constexpr, NP: tl.constexpr):
    """Column ``l`` of the Helmert basis (rows padded to NP); zero when ``l >= M``."""
    r = tl.arange(0, NP)
    val = tl.where(r <= l, 1.0, tl.where(r == l + 1, -(l + 1.0), 0.0))
    val = val * tl.rsqrt(tl.full((NP,), (l + 1.0) * (l + 2.0), tl.float32))
    if l >= M:
        val = val * 0.0
    return val


@triton.jit
def _cayley3(a, b, c):
    """Row-major 9-tuple of ``U = (I + A)^-1 (I - A) = ((1-|w|^2) I + 2ww^T - 2A) / (1+|w|^2)`` for
    ``A = [[0,a,b],[-a,0,c],[-b,-c,0]]`` with axial vector ``w = (c, -b, a)``."""
    w2 = a * a + b * b + c * c
    inv = 1.0 / (1.0 + w2)
    d = 1.0 - w2
    return (
        (d + 2.0 * c * c) * inv, (-2.0 * c * b - 2.0 * a) * inv, (2.0 * c * a - 2.0 * b) * inv,
        (-2.0 * b * c + 2.0 * a) * inv, (d + 2.0 * b * b) * inv, (-2.0 * b * a - 2.0 * c) * inv,
        (2.0 * a * c + 2.0 * b) * inv, (-2.0 * a * b + 2.0 * c) * inv, (d + 2.0 * a * a) * inv,
    )


@triton.jit
def _shc_coefficients(coef, cols, gamma_ptr, N: tl.constexpr, NP: tl.constexpr):
    """sHC ``(pre (BT,NP), H_res (BT,NP,NP), post (BT,NP))`` from gated+biased coefficients.

    Column layout of ``coef``: pre (n) | post (n) | d_U (k) | d_V (k) | d_sigma (m), m = n-1 <= 3.
    The Cayley transform is the 3x3 closed form ``((1-|w|^2) I + 2ww^T - 2A) / (1+|w|^2)`` of the
    skew matrix ``A = [[0,a,b],[-a,0,c],[-b,-c,0]]`` (m = 2 embeds as b = c = 0, m = 1 as A = 0:
    the padded block of U is the identity and its sigma is 0).
    """
    M: tl.constexpr = N - 1
    K: tl.constexpr = M * (M - 1) // 2
    base: tl.constexpr = 2 * N
    pre = _sigmoid(_columns(coef, cols, 0, NP))
    post = 2.0 * _sigmoid(_columns(coef, cols, N, NP))
    g_u = tl.load(gamma_ptr)
    g_v = tl.load(gamma_ptr + 1)
    zero = tl.sum(coef, axis=1) * 0.0
    ua = zero
    ub = zero
    uc = zero
    va = zero
    vb = zero
    vc = zero
    if K >= 1:
        ua = g_u * _tanh(_column(coef, cols, base))
        va = g_v * _tanh(_column(coef, cols, base + K))
    if K >= 3:
        ub = g_u * _tanh(_column(coef, cols, base + 1))
        uc = g_u * _tanh(_column(coef, cols, base + 2))
        vb = g_v * _tanh(_column(coef, cols, base + K + 1))
        vc = g_v * _tanh(_column(coef, cols, base + K + 2))
    s0 = _tanh(_column(coef, cols, base + 2 * K))
    s1 = zero
    s2 = zero
    if M >= 2:
        s1 = _tanh(_column(coef, cols, base + 2 * K + 1))
    if M >= 3:
        s2 = _tanh(_column(coef, cols, base + 2 * K + 2))

    p0 = _helmert_column(0, M, NP)[None, :]
    p1 = _helmert_column(1, M, NP)[None, :]
    p2 = _helmert_column(2, M, NP)[None, :]

    u = _cayley3(ua, ub, uc)
    v = _cayley3(va, vb, vc)

    # (PU)[:, k] and (PV)[:, k], each (BT, NP)
    pu0 = p0 * u[0][:, None] + p1 * u[3][:, None] + p2 * u[6][:, None]
    pu1 = p0 * u[1][:, None] + p1 * u[4][:, None] + p2 * u[7][:, None]
    pu2 = p0 * u[2][:, None] + p1 * u[5][:, None] + p2 * u[8][:, None]
    pv0 = p0 * v[0][:, None] + p1 * v[3][:, None] + p2 * v[6][:, None]
    pv1 = p0 * v[1][:, None] + p1 * v[4][:, None] + p2 * v[7][:, None]
    pv2 = p0 * v[2][:, None] + p1 * v[5][:, None] + p2 * v[8][:, None]
    res = (
        (s0[:, None, None] * pu0[:, :, None]) * pv0[:, None, :]
        + (s1[:, None, None] * pu1[:, :, None]) * pv1[:, None, :]
        + (s2[:, None, None] * pu2[:, :, None]) * pv2[:, None, :]
    )
    res = res + 1.0 / N
    return pre, res, post


@triton.jit
def _split_columns(mat, NP: tl.constexpr, N: tl.constexpr):
    """The first N columns of a (BT, NP) register tile, as a tuple of (BT,) vectors."""
    r = tl.arange(0, NP)
    out = ()
    for i in tl.static_range(N):
        out = out + (tl.sum(tl.where(r[None, :] == i, mat, 0.0), axis=1),)
    return out


@triton.jit
def _split_matrix(mat3, NP: tl.constexpr, N: tl.constexpr):
    """A (BT, NP, NP) register tile as a tuple of N*N (BT,) vectors; entry ``i*N + j`` is
    ``mat3[:, i, j]``."""
    r = tl.arange(0, NP)
    out = ()
    for i in tl.static_range(N):
        row_i = tl.sum(tl.where(r[None, :, None] == i, mat3, 0.0), axis=1)
        for j in tl.static_range(N):
            out = out + (tl.sum(tl.where(r[None, :] == j, row_i, 0.0), axis=1),)
    return out


@triton.jit
def _load_entries(ptr, row, tmask, K: tl.constexpr):
    """Per-token coefficients ``ptr[t, k]`` (row-major, K per token) as a tuple of K (BT,) vectors."""
    out = ()
    for k in tl.static_range(K):
        out = out + (tl.load(ptr + row * K + k, mask=tmask, other=0.0).to(tl.float32),)
    return out


@triton.jit
def _mix_tile(x_ptr, u_ptr, mixed_ptr, pre, res, row, tmask, C: tl.constexpr, N: tl.constexpr,
              BK: tl.constexpr):
    """``u = sum_i pre_i x_i`` and ``mixed_j = sum_i H[i,j] x_i`` for one token block: pointers at
    its first token, ``row`` the int32 token offsets within it, ``pre`` (N) and ``res`` (N*N,
    row-major) tuples of per-token (BT,) coefficients. Every tile is 2-D (BT, BK)."""
    for c0 in range(0, C, BK):
        c = c0 + tl.arange(0, BK)
        m2 = tmask[:, None] & (c[None, :] < C)
        xs = ()
        for i in tl.static_range(N):
            xi = tl.load(x_ptr + row[:, None] * (N * C) + i * C + c[None, :], mask=m2, other=0.0)
            xs = xs + (xi.to(tl.float32),)
        u = pre[0][:, None] * xs[0]
        for i in tl.static_range(1, N):
            u += pre[i][:, None] * xs[i]
        tl.store(u_ptr + row[:, None] * C + c[None, :], u.to(u_ptr.dtype.element_ty), mask=m2)
        for j in tl.static_range(N):
            mixed = res[j][:, None] * xs[0]
            for i in tl.static_range(1, N):
                mixed += res[i * N + j][:, None] * xs[i]
            offs = row[:, None] * (N * C) + j * C + c[None, :]
            tl.store(mixed_ptr + offs, mixed.to(mixed_ptr.dtype.element_ty), mask=m2)


@triton.jit
def width_fwd_kernel(
    x_ptr, wg_ptr, scale_ptr, bias_ptr, gamma_ptr,
    raw_ptr, inv_rms_ptr, post_ptr, u_ptr, mixed_ptr, pre_ptr, res_ptr,
    T, eps,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, NCP: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, FUSE_SHC: tl.constexpr, MIX: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    x_ptr += start * N * C
    raw_ptr += start * NCP
    inv_rms_ptr += start
    post_ptr += start * N
    u_ptr += start * C
    mixed_ptr += start * N * C
    pre_ptr += start * N
    res_ptr += start * N * N
    cols = tl.arange(0, NCP)
    acc = tl.zeros((BT, NCP), tl.float32)
    sumsq = tl.zeros((BT,), tl.float32)
    for i in tl.static_range(N):
        for c0 in range(0, C, BK):
            c = c0 + tl.arange(0, BK)
            cmask = c < C
            xi = tl.load(x_ptr + row[:, None] * (N * C) + i * C + c[None, :],
                         mask=tmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            sumsq += tl.sum(xi * xi, axis=1)
            w = tl.load(wg_ptr + (i * C + c)[:, None] * NCP + cols[None, :], mask=cmask[:, None], other=0.0)
            acc += tl.dot(xi, w, input_precision=DOT_PRECISION)
    inv_rms = tl.rsqrt(sumsq / (N * C) + eps)
    raw = acc * inv_rms[:, None]
    tl.store(raw_ptr + row[:, None] * NCP + cols[None, :], raw, mask=tmask[:, None])
    tl.store(inv_rms_ptr + row, inv_rms, mask=tmask)
    if FUSE_SHC:
        coef = raw * tl.load(scale_ptr + cols)[None, :] + tl.load(bias_ptr + cols)[None, :]
        pre, res, post = _shc_coefficients(coef, cols, gamma_ptr, N, NP)
        r = tl.arange(0, NP)
        rm = tmask[:, None] & (r[None, :] < N)
        tl.store(post_ptr + row[:, None] * N + r[None, :], post, mask=rm)
        if MIX:
            pre_t = _split_columns(pre, NP, N)
            res_t = _split_matrix(res, NP, N)
            _mix_tile(x_ptr, u_ptr, mixed_ptr, pre_t, res_t, row, tmask, C, N, BK)
        else:  # the caller mixes with mix_fwd_kernel
            tl.store(pre_ptr + row[:, None] * N + r[None, :], pre, mask=rm)
            offs = row[:, None, None] * (N * N) + r[None, :, None] * N + r[None, None, :]
            tl.store(res_ptr + offs, res, mask=rm[:, :, None] & (r[None, None, :] < N))


@triton.jit
def mix_fwd_kernel(
    x_ptr, pre_ptr, res_ptr, u_ptr, mixed_ptr, T,
    C: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
):
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tmask = t < T
    row = tl.arange(0, BT)  # int32 offsets inside the block; pointers moved to its start
    start = pid.to(tl.int64) * BT
    x_ptr += start * N * C
    pre_ptr += start * N
    res_ptr += start * N * N
    u_ptr += start * C
    mixed_ptr += start * N * C
    pre = _load_entries(pre_ptr, row, tmask, N)
    res = _load_entries(res_ptr, row, tmask, N * N)
    _mix_tile(x_ptr, u_ptr, mixed_ptr, pre, res, row, tmask, C, N, BK)
