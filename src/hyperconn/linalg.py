"""Small-matrix linear algebra shared by the hyper-connection variants.

Everything here acts on batches of tiny matrices (n <= 8): one per token. Nothing calls a
batched ``linalg.solve`` on the hot path: closed forms where they exist (Cayley for m <= 3),
an unrolled elimination otherwise (:func:`cayley_elimination`).
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "skew_from_params",
    "cayley",
    "cayley_from_params",
    "cayley_elimination",
    "cayley_quadratic_map",
    "helmert_basis",
    "sinkhorn_log",
    "permutation_matrices",
    "batched_kron",
]


def skew_from_params(z: torch.Tensor, m: int) -> torch.Tensor:
    """Skew-symmetric ``A`` (..., m, m) from its strict upper triangle ``z`` (..., m(m-1)/2).

    ``z`` fills the strict upper triangle in row-major ``torch.triu_indices(m, m, 1)`` order,
    and ``A = T - T^T``.
    """
    k = m * (m - 1) // 2
    if z.shape[-1] != k:
        raise ValueError(f"skew_from_params: expected {k} parameters for m={m}, got {z.shape[-1]}")
    rows, cols = torch.triu_indices(m, m, 1, device=z.device)
    upper = z.new_zeros(*z.shape[:-1], m, m)
    upper[..., rows, cols] = z
    return upper - upper.transpose(-1, -2)


def cayley(a: torch.Tensor) -> torch.Tensor:
    """Cayley transform ``U = (I + A)^-1 (I - A)`` of skew-symmetric ``A`` (general solve)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye + a, eye - a)


def cayley_from_params(z: torch.Tensor, m: int) -> torch.Tensor:
    """Cayley transform of ``skew_from_params(z, m)``, in closed form for m <= 3.

    m = 1: ``U = 1``. m = 2: with ``A = [[0, a], [-a, 0]]``,
    ``U = ((1 - a^2) I - 2A) / (1 + a^2)``. m = 3: with the axial vector ``w`` of ``A``,
    ``U = ((1 - |w|^2) I + 2 w w^T - 2A) / (1 + |w|^2)``. Larger m: :func:`cayley_elimination`
    (an unrolled Gauss-Jordan elimination, no ``linalg.solve``).
    """
    lead = z.shape[:-1]
    if m == 1:
        return z.new_ones(*lead, 1, 1)
    if m == 2:
        a = z[..., 0]
        a2 = a * a
        c = (1 - a2) / (1 + a2)
        s = 2 * a / (1 + a2)
        # U = [[c, -s], [s, c]]
        return torch.stack([c, -s, s, c], dim=-1).reshape(*lead, 2, 2)
    if m == 3:
        # A = [[0, a, b], [-a, 0, c], [-b, -c, 0]]; axial vector (up to sign) w = (c, -b, a),
        # |w|^2 = |z|^2. A and w are linear in z: two constant maps instead of per-entry stacks.
        skew_map, axial_map = _m3_maps(z.dtype, z.device)
        w = z @ axial_map
        w2 = (z * z).sum(-1, keepdim=True)
        outer = (w.unsqueeze(-1) * w.unsqueeze(-2)).reshape(*lead, 9)
        # (1 - |w|^2) I on the diagonal entries 0, 4, 8 of the flattened 3 x 3
        num = 2 * outer - 2 * (z @ skew_map)
        num[..., ::4] += 1 - w2
        return (num / (1 + w2)).reshape(*lead, 3, 3)
    return cayley_elimination(z, m)


def cayley_elimination(z: torch.Tensor, m: int) -> torch.Tensor:
    """``Cayley(skew_from_params(z, m))`` for any m, exact, without ``linalg.solve``.

    ``(I + A) U = I - A`` is solved by Gauss-Jordan elimination unrolled over the ``m`` pivots,
    each pivot one vectorised update of all matrices at once (batch-last layout, so every op
    runs over contiguous memory). No pivoting is needed: the symmetric part of ``I + A`` is
    ``I`` (``A`` is skew), so every leading principal minor is >= 1 and the growth factor is
    bounded. Backward is closed-form: with ``(I + A)^-1 = (I + U) / 2``,
    ``dL/dA = -(I + U)^T G (I + U)^T / 2``, two small batched GEMMs instead of differentiating
    the elimination step by step. ``z`` (..., m(m-1)/2) -> ``U`` (..., m, m).
    """
    k = m * (m - 1) // 2
    if z.shape[-1] != k:
        raise ValueError(f"cayley_elimination: expected {k} parameters for m={m}, got {z.shape[-1]}")
    return _CayleyElimination.apply(z, m)


class _CayleyElimination(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, m: int) -> torch.Tensor:
        lead = z.shape[:-1]
        skew_map = _skew_map(m, z.dtype, z.device)
        # batch-last: A[i, j, b] = vec(A_b)[i m + j], one GEMM from the parameters
        a = (skew_map.t() @ z.reshape(math.prod(lead), z.shape[-1]).t()).reshape(m, m, -1)
        eye = torch.eye(m, dtype=z.dtype, device=z.device).unsqueeze(-1)
        aug = torch.cat([eye + a, eye - a], dim=1)  # (m, 2m, B) = [I + A | I - A]
        for p in range(m):
            pivot_row = aug[p] / aug[p, p]  # (2m, B)
            # subtracting (column - e_p) x pivot_row clears column p and turns row p into the pivot row
            aug = torch.addcmul(aug, (aug[:, p] - eye[:, p]).unsqueeze(1), pivot_row.unsqueeze(0), value=-1.0)
        u = aug[:, m:].permute(2, 0, 1).reshape(*lead, m, m)
        ctx.m = m
        ctx.save_for_backward(u)
        return u

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        m = ctx.m
        lead = u.shape[:-2]
        # batch-last again, the two m x m products as m rank-1 updates each over contiguous
        # (m, m, B) tensors: batched m x m GEMMs run at about a microsecond per tiny matrix
        # (u is the batch-last elimination result seen through a permuted view: no copy here)
        eye = torch.eye(m, dtype=u.dtype, device=u.device).unsqueeze(-1)
        w = (u.reshape(-1, m, m).permute(1, 2, 0) + eye).contiguous()  # W = I + U, W[j, i, b]
        g = grad.reshape(-1, m, m).permute(1, 2, 0).contiguous()
        wg = w[0].unsqueeze(1) * g[0].unsqueeze(0)  # (W^T G)[i, k] = sum_j W[j, i] G[j, k]
        for j in range(1, m):
            wg = torch.addcmul(wg, w[j].unsqueeze(1), g[j].unsqueeze(0))
        grad_a = wg[:, 0].unsqueeze(1) * w[:, 0].unsqueeze(0)  # (W^T G W^T)[i, l] = sum_k (W^T G)[i, k] W[l, k]
        for col in range(1, m):
            grad_a = torch.addcmul(grad_a, wg[:, col].unsqueeze(1), w[:, col].unsqueeze(0))
        # dL/dz_k = dL/dA[i, j] - dL/dA[j, i] for the k-th upper-triangle entry (i, j)
        grad_z = _skew_map(m, u.dtype, u.device) @ grad_a.reshape(m * m, -1)
        return (-0.5 * grad_z).t().reshape(*lead, grad_z.shape[0]), None


_SKEW_CACHE: dict = {}


def _skew_map(m: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``vec(skew_from_params(z, m)) = z @ skew_map``, shape (m(m-1)/2, m^2); cached like
    :func:`_m3_maps` (eager mode only)."""
    key = (m, dtype, device)
    if not torch.compiler.is_compiling() and key in _SKEW_CACHE:
        return _SKEW_CACHE[key]
    k = m * (m - 1) // 2
    skew_map = skew_from_params(torch.eye(k, dtype=dtype, device=device), m).reshape(k, m * m)
    if not torch.compiler.is_compiling():
        _SKEW_CACHE[key] = skew_map
    return skew_map


def cayley_quadratic_map(m: int) -> torch.Tensor:
    """For m = 2, 3 the Cayley transform is a quadratic form over ``(1 + |z|^2)``: with
    ``q = vec([1, z] [1, z]^T)`` ((k+1)^2 entries), ``vec(N(z)) = q @ M[:, :m^2]`` and
    ``1 + |z|^2 = q @ M[:, m^2]``, where ``U = N / (1 + |z|^2)`` (the closed forms of
    :func:`cayley_from_params`). Returns ``M`` ((k+1)^2, m^2 + 1), float64.

    ``N = I - 2A - |z|^2 I`` (m = 2) and ``N = I - 2A + 2 w w^T - |z|^2 I`` with the axial vector
    ``w = (z_2, -z_1, z_0)`` of ``A`` (m = 3): a constant, a linear and a quadratic part, placed
    on the entries ``q[0]``, ``q[0, 1 + a]`` and ``q[1 + a, 1 + b]``."""
    if m not in (2, 3):
        raise ValueError(f"cayley_quadratic_map: closed form only for m = 2 or 3, got m={m}")
    k = m * (m - 1) // 2
    eye = torch.eye(m, dtype=torch.float64)
    skew = skew_from_params(torch.eye(k, dtype=torch.float64), m)  # A = sum_a z_a skew[a]
    num = torch.zeros(k + 1, k + 1, m, m, dtype=torch.float64)
    den = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    num[0, 0] = eye
    den[0, 0] = 1.0
    for a in range(k):
        num[0, 1 + a] = -2 * skew[a]
        num[1 + a, 1 + a] -= eye
        den[1 + a, 1 + a] = 1.0
    if m == 3:
        axial = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # w = axial @ z
        for a in range(k):
            for b in range(k):
                num[1 + a, 1 + b] += 2 * torch.outer(axial[:, a], axial[:, b])
    return torch.cat([num.reshape((k + 1) ** 2, m * m), den.reshape(-1, 1)], dim=-1)


_M3_CACHE: dict = {}


def _m3_maps(dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant linear maps for m = 3: ``vec(A) = z @ skew_map`` (3, 9), ``w = z @ axial_map`` (3, 3).

    Cached per (dtype, device) in eager mode (building them is a dozen tiny ops: the bulk of a
    one-token call); under ``torch.compile`` they are built inline and constant-folded."""
    key = (dtype, device)
    if not torch.compiler.is_compiling() and key in _M3_CACHE:
        return _M3_CACHE[key]
    skew_map = torch.zeros(3, 9, dtype=dtype, device=device)
    for k, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
        skew_map[k, 3 * i + j] = 1.0
        skew_map[k, 3 * j + i] = -1.0
    axial_map = torch.tensor([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype, device=device)
    if not torch.compiler.is_compiling():
        _M3_CACHE[key] = (skew_map, axial_map)
    return skew_map, axial_map


def helmert_basis(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Orthonormal basis ``P`` (n, n-1) of the complement of the all-ones vector.

    Column ``i-1`` holds ``1/sqrt(i(i+1))`` in rows ``0..i-1`` and ``-i/sqrt(i(i+1))`` in row ``i``;
    ``P^T P = I`` and ``P P^T = I - J`` with ``J = 11^T / n``.
    """
    p = torch.zeros(n, n - 1, dtype=torch.float64)
    for i in range(1, n):
        norm = math.sqrt(i * (i + 1))
        p[:i, i - 1] = 1.0 / norm
        p[i, i - 1] = -i / norm
    return p.to(dtype=dtype, device=device)


def sinkhorn_log(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """Log-domain Sinkhorn on the last two axes of ``logits`` ``L`` (..., n, n): ``iters`` rounds
    of a column then a row normalisation, then ``exp``.

    Each half step is one ``log_softmax``: the column step
    ``L_ij <- L_ij - log sum_k exp(L_kj)`` (``log_softmax(L, dim=-2)``), then the row step
    ``L_ij <- L_ij - log sum_k exp(L_ik)`` (``log_softmax(L, dim=-1)``), and ``H = exp(L)``; the
    last row step and the ``exp`` are one ``softmax``. Rows of ``H`` sum to 1 to
    rounding; columns only approximately (the Sinkhorn error, shrinking with ``iters``).
    ``iters``: an integer >= 1.

    The iterations run batch-last (``L`` as (n, n, tokens), so every half step is one wide pass
    over contiguous memory instead of thousands of 4-wide ones), in one autograd node whose
    backward is the exact gradient of the unrolled iterations, step by step in reverse, from the
    saved outputs ``Y_k`` of every half step (``d`` its reduced axis, ``G`` the incoming gradient):

    - the last row step, ``H = softmax(X)``: ``dL/dX = H * (G - sum_d(G * H))``;
    - every other half step, ``Y = log_softmax(X)``: ``dL/dX = G - exp(Y) * sum_d(G)``.

    Double backward (``create_graph=True``) re-runs the plain per-step loop under autograd;
    ``torch.compile`` and autocast run that loop directly (:func:`_sinkhorn_unrolled`).
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"sinkhorn_log: iters must be an integer >= 1, got {iters!r}")
    device_type = logits.device.type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    if logits.dim() < 2 or autocast or torch.compiler.is_compiling():
        return _sinkhorn_unrolled(logits, iters)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _SinkhornLog.apply(logits, iters)
    steps = _sinkhorn_steps(_batch_last(logits), iters, keep=False)
    return _batch_first(steps[-1], logits.shape)


def _sinkhorn_unrolled(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """:func:`sinkhorn_log` as plain per-step ops on ``logits``' own layout (autograd
    differentiates it step by step)."""
    for _ in range(iters - 1):
        logits = torch.log_softmax(torch.log_softmax(logits, dim=-2), dim=-1)
    return torch.softmax(torch.log_softmax(logits, dim=-2), dim=-1)


def _batch_last(t: torch.Tensor) -> torch.Tensor:
    """(..., r, c) -> contiguous (r, c, B): ``out[i, j, b] = t_b[i, j]``."""
    r, c = t.shape[-2:]
    return t.reshape(math.prod(t.shape[:-2]), r, c).permute(1, 2, 0).contiguous()


def _batch_first(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`_batch_last`: (r, c, B) -> contiguous ``shape`` (..., r, c)."""
    return t.permute(2, 0, 1).contiguous().reshape(shape)


def _sinkhorn_steps(a: torch.Tensor, iters: int, keep: bool) -> list[torch.Tensor]:
    """The half steps on batch-last ``a`` (r, c, B): a column step is a ``log_softmax`` over
    axis 0, a row step one over axis 1. Returns every output in order (the last is ``H``), or
    ``[H]`` alone where ``keep`` is false."""
    steps = []
    x = a
    for i in range(iters):
        col = torch.log_softmax(x, 0)
        x = torch.log_softmax(col, 1) if i < iters - 1 else torch.softmax(col, 1)
        if keep:
            steps.append(col)
            steps.append(x)
    return steps if keep else [x]


class _SinkhornLog(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, iters: int) -> torch.Tensor:
        steps = _sinkhorn_steps(_batch_last(logits), iters, keep=True)
        h = _batch_first(steps.pop(), logits.shape)
        ctx.iters = iters
        # H is saved as returned (the batch-last copy is dropped): the same bytes as autograd's
        # per-step graph, plus the logits for a double backward
        ctx.save_for_backward(logits, h, *steps)
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, h, *steps = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the saved steps are not in the graph
            with torch.enable_grad():
                h = _sinkhorn_unrolled(logits, ctx.iters)
            return torch.autograd.grad(h, logits, grad, create_graph=True)[0], None
        # the fused backward kernels of softmax and log_softmax, the ones autograd would call
        g = _batch_last(torch._softmax_backward_data(grad, h, -1, grad.dtype))
        for k in range(len(steps) - 1, -1, -1):  # even k: column steps (axis 0), odd: row steps
            g = torch._log_softmax_backward_data(g, steps[k], k % 2, grad.dtype)
        return g.permute(2, 0, 1).reshape(logits.shape), None


def permutation_matrices(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """All ``n!`` permutation matrices (n!, n, n), identity first (lexicographic order).

    ``P_r[i, perm_r[i]] = 1``.
    """
    perms = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)
    mats = torch.zeros(len(perms), n, n, dtype=dtype)
    mats.scatter_(-1, perms.unsqueeze(-1), 1.0)
    return mats.to(device)


def batched_kron(factors: list[torch.Tensor]) -> torch.Tensor:
    """Kronecker product ``F_1 ⊗ F_2 ⊗ ...`` of batched square matrices (..., a, a)."""
    out = factors[0]
    for f in factors[1:]:
        a, b = out.shape[-1], f.shape[-1]
        out = (out[..., :, None, :, None] * f[..., None, :, None, :]).reshape(
            *out.shape[:-2], a * b, a * b
        )
    return out
