"""Diagnostics of residual mixing matrices (docs/design.md, diagnostics), as pure functions.

Every function takes a batch of matrices ``h`` of shape ``(..., n, n)`` (one per token and/or
layer) and returns one value per matrix, shape ``(...)`` (or ``(..., k)`` for spectra). They
are computed in float64 whatever the input dtype.

Convention (the library's): output stream ``j`` of a mix is ``x'_j = sum_i H[i, j] x_i``. As a
column vector of stream values, ``x' = H^T x``. Applying ``H^(1)``, then ``H^(2)``, ...,
``H^(L)`` therefore gives ``x^(L) = A x^(0)`` with the *operator*

    A = (H^(1) H^(2) ... H^(L))^T = M^T,       M = H^(1) H^(2) ... H^(L) (order applied).

:func:`composite` returns ``A``, the matrix acting on column vectors, so that the gains read
as in the mHC paper ("Amax gain"):

- forward gain  = ``max_i sum_j |A_ij|`` (max absolute row sum = ``||A||_inf``): the largest
  output amplitude per unit input amplitude;
- backward gain = ``max_j sum_i |A_ij|`` (max absolute column sum = ``||A||_1``): the same for
  gradients, which flow back through ``A^T``;
- ``||A||_2 = ||M||_2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..linalg import helmert_basis, sinkhorn_log

__all__ = [
    "NEGATIVE_TOL",
    "identity_distance",
    "off_diagonal_mass",
    "negative_fraction",
    "negative_mass",
    "singular_values",
    "spectral_norm",
    "subdominant_singular_values",
    "effective_rank",
    "row_sum_error",
    "column_sum_error",
    "composite",
    "prefix_composites",
    "forward_gain",
    "backward_gain",
    "sinkhorn_error_curve",
]

NEGATIVE_TOL = 1e-6
"""An entry counts as negative when it is below ``-NEGATIVE_TOL``."""


def _f64(h: torch.Tensor) -> torch.Tensor:
    if h.dim() < 2 or h.shape[-1] != h.shape[-2]:
        raise ValueError(f"expected a batch of square matrices (..., n, n), got shape {tuple(h.shape)}")
    return h.detach().to(torch.float64)


def identity_distance(h: torch.Tensor) -> torch.Tensor:
    """``||H - I||_F``."""
    h = _f64(h)
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    return torch.linalg.matrix_norm(h - eye)


def off_diagonal_mass(h: torch.Tensor) -> torch.Tensor:
    """``sum_{i != j} |H_ij| / n``."""
    h = _f64(h)
    n = h.shape[-1]
    total = h.abs().sum((-1, -2))
    diag = torch.diagonal(h, dim1=-2, dim2=-1).abs().sum(-1)
    return (total - diag) / n


def negative_fraction(h: torch.Tensor, tol: float = NEGATIVE_TOL) -> torch.Tensor:
    """Fraction of the ``n^2`` entries below ``-tol``."""
    h = _f64(h)
    return (h < -tol).to(h.dtype).mean((-1, -2))


def negative_mass(h: torch.Tensor) -> torch.Tensor:
    """``sum_ij max(-H_ij, 0) / n``."""
    h = _f64(h)
    return (-h).clamp_min(0).sum((-1, -2)) / h.shape[-1]


def singular_values(h: torch.Tensor) -> torch.Tensor:
    """All singular values, descending, ``(..., n)``."""
    return torch.linalg.svdvals(_f64(h))


def spectral_norm(h: torch.Tensor) -> torch.Tensor:
    """``||H||_2``, the largest singular value."""
    return singular_values(h)[..., 0]


def subdominant_singular_values(h: torch.Tensor) -> torch.Tensor:
    """Singular values of ``P^T H P`` (descending, ``(..., n-1)``), ``P`` the Helmert basis.

    The part of ``H`` acting on mean-free stream directions: for any ``H`` with rows and columns
    summing to 1, ``H = J + P (P^T H P) P^T``, so these are the singular values besides the 1 on
    the all-ones direction. For sHC they are ``|sigma_i|``; a doubly stochastic ``H`` near ``I``
    has them all near 1.
    """
    h = _f64(h)
    n = h.shape[-1]
    p = helmert_basis(n, torch.float64, h.device)
    if n == 1:
        return h.new_zeros(*h.shape[:-2], 0)
    return torch.linalg.svdvals(p.T @ h @ p)


def effective_rank(h: torch.Tensor) -> torch.Tensor:
    """``exp(-sum_i q_i log q_i)`` with ``q = s / sum(s)``, ``s`` the singular values (0 log 0 = 0)."""
    s = singular_values(h)
    q = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
    plogp = torch.where(q > 0, q * q.clamp_min(torch.finfo(s.dtype).tiny).log(), torch.zeros_like(q))
    entropy = -plogp.sum(-1)
    return entropy.exp()


def row_sum_error(h: torch.Tensor) -> torch.Tensor:
    """``max_i |sum_j H_ij - 1|``."""
    return (_f64(h).sum(-1) - 1).abs().amax(-1)


def column_sum_error(h: torch.Tensor) -> torch.Tensor:
    """``max_j |sum_i H_ij - 1|``."""
    return (_f64(h).sum(-2) - 1).abs().amax(-1)


def prefix_composites(hs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Operators ``A^(l)`` after the first ``l = 1..L`` mixes (see the module docstring).

    ``hs[l]`` is the matrix (or batch of matrices, one per token) of the ``l``-th connection in
    the order applied, in the library's convention ``x'_j = sum_i H[i, j] x_i``; all must share
    their leading shape. ``A^(l) = H^(l)^T A^(l-1)``.
    """
    if len(hs) == 0:
        raise ValueError("prefix_composites: need at least one matrix")
    out: list[torch.Tensor] = []
    acc = None
    for h in hs:
        step = _f64(h).transpose(-1, -2)
        acc = step if acc is None else step @ acc
        out.append(acc)
    return out


def composite(hs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The operator ``A = (H^(1) H^(2) ... H^(L))^T`` with ``x^(L) = A x^(0)`` (column vectors)."""
    return prefix_composites(hs)[-1]


def forward_gain(a: torch.Tensor) -> torch.Tensor:
    """``max_i sum_j |A_ij|`` of an operator from :func:`composite`."""
    return _f64(a).abs().sum(-1).amax(-1)


def backward_gain(a: torch.Tensor) -> torch.Tensor:
    """``max_j sum_i |A_ij|`` of an operator from :func:`composite`."""
    return _f64(a).abs().sum(-2).amax(-1)


def sinkhorn_error_curve(logits: torch.Tensor, max_iters: int = 50) -> torch.Tensor:
    """Mean column-sum error of ``sinkhorn_log(logits, k)`` for ``k = 1..max_iters``, shape ``(max_iters,)``.

    Rows sum to 1 to rounding after every full Sinkhorn round, so the column-sum error is the
    distance to doubly stochastic. Uses :func:`hyperconn.linalg.sinkhorn_log`, the function mHC uses.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    logits = _f64(logits)
    return torch.stack([column_sum_error(sinkhorn_log(logits, k)).mean() for k in range(1, max_iters + 1)])
