"""Small-matrix linear algebra shared by the hyper-connection variants.

Everything here acts on batches of tiny matrices (n <= 8): one per token. The
closed forms avoid a batched solve per token where one exists.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "skew_from_params",
    "cayley",
    "cayley_from_params",
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
    ``U = ((1 - |w|^2) I + 2 w w^T - 2A) / (1 + |w|^2)``. Larger m uses a batched solve.
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
    return cayley(skew_from_params(z, m))


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
    """Log-domain Sinkhorn: alternate column then row normalisation, return ``exp``.

    Rows sum to 1 to rounding after the last step; columns only approximately.
    """
    for _ in range(iters):
        logits = logits - torch.logsumexp(logits, dim=-2, keepdim=True)
        logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return logits.exp()


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
