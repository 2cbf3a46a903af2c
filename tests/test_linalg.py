import itertools
import math

import pytest
import torch

from shc import linalg


@pytest.mark.parametrize("n", range(2, 9))
def test_helmert_basis_is_orthonormal_complement_of_ones(n):
    p = linalg.helmert_basis(n, torch.float64)
    assert p.shape == (n, n - 1)
    torch.testing.assert_close(p.T @ p, torch.eye(n - 1, dtype=torch.float64))
    j = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    torch.testing.assert_close(p @ p.T, torch.eye(n, dtype=torch.float64) - j)
    # the documented column layout
    for i in range(1, n):
        col = p[:, i - 1]
        torch.testing.assert_close(col[:i], torch.full((i,), 1 / math.sqrt(i * (i + 1)), dtype=torch.float64))
        assert col[i].item() == pytest.approx(-i / math.sqrt(i * (i + 1)))
        assert torch.all(col[i + 1 :] == 0)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 6])
def test_cayley_closed_form_matches_solve_and_is_a_rotation(m):
    k = m * (m - 1) // 2
    z = 2 * torch.randn(7, 5, k, dtype=torch.float64)
    u = linalg.cayley_from_params(z, m)
    a = linalg.skew_from_params(z, m)
    eye = torch.eye(m, dtype=torch.float64)
    reference = torch.linalg.solve(eye + a, eye - a)
    torch.testing.assert_close(u, reference)
    torch.testing.assert_close(u @ u.transpose(-1, -2), eye.expand_as(u))
    torch.testing.assert_close(torch.linalg.det(u), torch.ones(7, 5, dtype=torch.float64))


def test_skew_layout_is_row_major_upper_triangle():
    z = torch.tensor([1.0, 2.0, 3.0])
    a = linalg.skew_from_params(z, 3)
    expected = torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.0, 3.0], [-2.0, -3.0, 0.0]])
    torch.testing.assert_close(a, expected)
    with pytest.raises(ValueError, match="expected 3 parameters"):
        linalg.skew_from_params(torch.zeros(2), 3)


@pytest.mark.parametrize("m", [2, 3])
def test_cayley_closed_form_gradcheck(m):
    z = torch.randn(4, m * (m - 1) // 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: linalg.cayley_from_params(t, m), (z,))


def test_sinkhorn_rows_exact_columns_converge():
    logits = torch.randn(100, 4, 4, dtype=torch.float64)
    h = linalg.sinkhorn_log(logits, 50)
    torch.testing.assert_close(h.sum(-1), torch.ones(100, 4, dtype=torch.float64))
    assert (h.sum(-2) - 1).abs().max() < 1e-6
    assert torch.all(h >= 0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_permutation_matrices(n):
    mats = linalg.permutation_matrices(n)
    assert mats.shape == (math.factorial(n), n, n)
    torch.testing.assert_close(mats[0], torch.eye(n))
    torch.testing.assert_close(mats.sum(-1), torch.ones(math.factorial(n), n))
    torch.testing.assert_close(mats.sum(-2), torch.ones(math.factorial(n), n))
    assert len({tuple(m.flatten().tolist()) for m in mats}) == math.factorial(n)
    for r, perm in enumerate(itertools.permutations(range(n))):
        assert [int(mats[r, i].argmax()) for i in range(n)] == list(perm)


def test_batched_kron_matches_torch_kron():
    factors = [torch.randn(3, 2, 2, dtype=torch.float64) for _ in range(3)]
    out = linalg.batched_kron(factors)
    for b in range(3):
        expected = torch.kron(torch.kron(factors[0][b], factors[1][b]), factors[2][b])
        torch.testing.assert_close(out[b], expected)
