"""Diagnostics on hand-built matrices with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import hyperconn
from hyperconn.diagnostics import metrics as dg

N = 4


def permutation(perm: list[int]) -> torch.Tensor:
    """``P[i, perm[i]] = 1``."""
    n = len(perm)
    p = torch.zeros(n, n, dtype=torch.float64)
    p[torch.arange(n), torch.tensor(perm)] = 1.0
    return p


def test_identity():
    h = torch.eye(N).expand(3, N, N)
    assert torch.allclose(dg.identity_distance(h), torch.zeros(3, dtype=torch.float64))
    assert torch.all(dg.off_diagonal_mass(h) == 0)
    assert torch.all(dg.negative_fraction(h) == 0) and torch.all(dg.negative_mass(h) == 0)
    assert torch.allclose(dg.spectral_norm(h), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(dg.subdominant_singular_values(h), torch.ones(3, N - 1, dtype=torch.float64))
    assert torch.allclose(dg.effective_rank(h), torch.full((3,), float(N), dtype=torch.float64))
    assert torch.all(dg.row_sum_error(h) == 0) and torch.all(dg.column_sum_error(h) == 0)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_uniform_averaging_matrix(n):
    j = torch.full((n, n), 1.0 / n)
    assert math.isclose(float(dg.identity_distance(j)), math.sqrt(n - 1), rel_tol=1e-12)
    assert math.isclose(float(dg.off_diagonal_mass(j)), (n - 1) / n, rel_tol=1e-6)
    assert float(dg.negative_mass(j)) == 0
    assert math.isclose(float(dg.spectral_norm(j)), 1.0, rel_tol=1e-6)
    zeros = torch.zeros(n - 1, dtype=torch.float64)
    assert torch.allclose(dg.subdominant_singular_values(j), zeros, atol=1e-7)
    assert math.isclose(float(dg.effective_rank(j)), 1.0, rel_tol=1e-6)
    assert float(dg.row_sum_error(j)) < 1e-6 and float(dg.column_sum_error(j)) < 1e-6


def test_permutation():
    perm = [1, 2, 0, 3]  # a 3-cycle, one fixed point
    p = permutation(perm)
    moved = sum(i != k for i, k in enumerate(perm))
    assert math.isclose(float(dg.identity_distance(p)), math.sqrt(2 * moved), rel_tol=1e-12)
    assert math.isclose(float(dg.off_diagonal_mass(p)), moved / N, rel_tol=1e-12)
    assert float(dg.negative_fraction(p)) == 0
    assert torch.allclose(dg.subdominant_singular_values(p), torch.ones(N - 1, dtype=torch.float64))
    assert math.isclose(float(dg.effective_rank(p)), N, rel_tol=1e-12)


def test_negative_entries_and_sum_errors():
    h = torch.tensor([[1.5, -0.5], [0.25, 0.5]], dtype=torch.float64)
    assert float(dg.negative_fraction(h)) == 0.25
    assert float(dg.negative_mass(h)) == 0.25  # 0.5 / n
    assert float(dg.row_sum_error(h)) == 0.25  # rows sum to 1.0 and 0.75
    assert float(dg.column_sum_error(h)) == 1.0  # columns sum to 1.75 and 0.0
    assert math.isclose(float(dg.spectral_norm(h)), np.linalg.norm(h.numpy(), 2), rel_tol=1e-12)


def _cayley_np(z: np.ndarray, m: int) -> np.ndarray:
    a = np.zeros((m, m))
    a[np.triu_indices(m, 1)] = z
    a = a - a.T
    return np.linalg.solve(np.eye(m) + a, np.eye(m) - a)


def test_known_shc_matrix():
    """sHC with a zero projection: H = J + P U diag(sigma) V^T P^T from the static bias alone."""
    n, m = N, N - 1
    k = m * (m - 1) // 2
    b_u, b_v = np.array([0.3, -0.7, 0.5]), np.array([-0.2, 0.9, 0.1])
    sigma = np.array([0.9, -0.5, 0.2])
    conn = hyperconn.make_connection("shc", n, 8, layer_index=0)
    with torch.no_grad():
        conn.bias[2 * n :] = torch.tensor(np.concatenate([b_u, b_v, np.arctanh(sigma)]), dtype=torch.float32)
    with torch.no_grad():
        h = conn.mixing(torch.randn(5, n, 8, dtype=torch.float64)).res  # float64 in, float64 out

    u = _cayley_np(np.tanh(b_u), m)
    v = _cayley_np(np.tanh(b_v), m)
    e = u @ np.diag(sigma) @ v.T
    p = hyperconn.linalg.helmert_basis(n, torch.float64).numpy()
    expected = np.full((n, n), 1.0 / n) + p @ e @ p.T
    assert k == 3 and np.allclose(h[0].numpy(), expected, atol=1e-6)

    tol = dict(rtol=1e-5, atol=1e-6)
    assert np.allclose(dg.row_sum_error(h), 0, atol=1e-6)
    assert np.allclose(dg.column_sum_error(h), 0, atol=1e-6)
    assert np.allclose(dg.spectral_norm(h), 1.0, **tol)
    assert np.allclose(dg.subdominant_singular_values(h), np.sort(np.abs(sigma))[::-1][None], **tol)
    # H - I = P (E - I) P^T, so ||H - I||_F = ||E - I||_F
    assert np.allclose(dg.identity_distance(h), np.linalg.norm(e - np.eye(m)), **tol)
    q = np.concatenate([[1.0], np.abs(sigma)])
    q = q / q.sum()
    assert np.allclose(dg.effective_rank(h), np.exp(-(q * np.log(q)).sum()), **tol)
    assert np.allclose(dg.negative_fraction(h), (expected < -1e-6).mean(), **tol)
    assert np.allclose(dg.negative_mass(h), np.clip(-expected, 0, None).sum() / n, **tol)
    assert float(dg.negative_mass(h)[0]) > 0  # this sHC matrix does subtract
    off = np.abs(expected).sum() - np.abs(np.diag(expected)).sum()
    assert np.allclose(dg.off_diagonal_mass(h), off / n, **tol)


def _apply(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The library's mix: out_j = sum_i H[i, j] x_i."""
    return torch.einsum("st,s->t", h, x)


def test_composite_order_and_gains_match_propagation():
    gen = torch.Generator().manual_seed(1)
    hs = [torch.randn(N, N, generator=gen, dtype=torch.float64) for _ in range(3)]
    a = dg.composite(hs)
    assert torch.allclose(a, (hs[0] @ hs[1] @ hs[2]).T)
    x0 = torch.randn(N, generator=gen, dtype=torch.float64)
    x = x0
    for h in hs:
        x = _apply(h, x)
    assert torch.allclose(a @ x0, x)
    # forward gain = max over |x0|_inf <= 1 of |x_L|_inf: attained at a sign vector
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=N)), dtype=torch.float64)
    best_forward = (signs @ a.T).abs().amax()
    assert torch.isclose(dg.forward_gain(a), best_forward)
    best_backward = (signs @ a).abs().amax()  # gradients flow back through A^T
    assert torch.isclose(dg.backward_gain(a), best_backward)
    prefixes = dg.prefix_composites(hs)
    assert len(prefixes) == 3 and torch.allclose(prefixes[0], hs[0].T)


def test_composite_of_permutations_and_doubly_stochastic():
    p = permutation([1, 2, 3, 0])
    a = dg.composite([p] * 4)  # a 4-cycle applied 4 times is the identity
    assert torch.allclose(a, torch.eye(N, dtype=torch.float64))
    ds = 0.7 * torch.eye(N, dtype=torch.float64) + 0.3 * p
    a = dg.composite([ds] * 10)
    assert torch.isclose(dg.forward_gain(a), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(dg.backward_gain(a), torch.tensor(1.0, dtype=torch.float64))


def test_sinkhorn_curve_matches_mhc():
    conn = hyperconn.make_connection("mhc", N, 8, sinkhorn_iters=7)
    with torch.no_grad():
        conn.proj.normal_(0, 1.0)
        conn.gates.fill_(1.0)
    x = torch.randn(16, N, 8, dtype=torch.float64)
    from hyperconn.diagnostics import mhc_logits

    curve = dg.sinkhorn_error_curve(mhc_logits(conn, x), 50)
    assert curve.shape == (50,)
    assert math.isclose(float(curve[6]), float(dg.column_sum_error(conn.mixing(x).res).mean()), rel_tol=1e-9)
    assert float(curve[-1]) <= float(curve[0])


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        dg.identity_distance(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least one"):
        dg.composite([])
    with pytest.raises(ValueError, match="max_iters"):
        dg.sinkhorn_error_curve(torch.zeros(4, 4), 0)
