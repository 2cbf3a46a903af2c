import itertools
import math

import pytest
import torch

from hyperconn import linalg


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


def _cayley_by_solve(z: torch.Tensor, m: int) -> torch.Tensor:
    a = linalg.skew_from_params(z, m)
    eye = torch.eye(m, dtype=z.dtype)
    return torch.linalg.solve(eye + a, eye - a)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("lead", [(), (9,), (3, 2, 5)])
def test_cayley_elimination_matches_solve(m, lead):
    k = m * (m - 1) // 2
    gen = torch.Generator().manual_seed(m)
    z = 3 * torch.randn(*lead, k, dtype=torch.float64, generator=gen)  # far from the identity
    u = linalg.cayley_elimination(z, m)
    assert u.shape == (*lead, m, m)
    torch.testing.assert_close(u, _cayley_by_solve(z, m), rtol=1e-12, atol=1e-12)
    eye = torch.eye(m, dtype=torch.float64)
    torch.testing.assert_close(u @ u.transpose(-1, -2), eye.expand_as(u))
    # float32 agrees with the float64 solve to float32 rounding
    u32 = linalg.cayley_elimination(z.float(), m)
    assert u32.dtype == torch.float32
    torch.testing.assert_close(u32.double(), _cayley_by_solve(z, m), rtol=0, atol=2e-5)


@pytest.mark.parametrize("m", [4, 5, 7])
def test_cayley_elimination_gradients_match_solve(m):
    k = m * (m - 1) // 2
    z = 2 * torch.randn(6, k, dtype=torch.float64)
    upstream = torch.randn(6, m, m, dtype=torch.float64)
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    (linalg.cayley_elimination(z1, m) * upstream).sum().backward()
    (_cayley_by_solve(z2, m) * upstream).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [4, pytest.param(7, marks=pytest.mark.slow)])  # m = 7: 21 parameters, 49 outputs
def test_cayley_elimination_gradcheck(m):
    k = m * (m - 1) // 2
    z = torch.randn(2, 3, k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: linalg.cayley_elimination(t, m), (z,))
    if m == 4:  # the closed-form backward is built from differentiable ops: second derivatives too
        assert torch.autograd.gradgradcheck(lambda t: linalg.cayley_elimination(t, m), (z[:1],))


def test_cayley_from_params_uses_no_solve_for_large_m(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("linalg.solve called")

    monkeypatch.setattr(torch.linalg, "solve", refuse)
    z = torch.randn(4, 21, requires_grad=True)
    linalg.cayley_from_params(z, 7).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_cayley_elimination_rejects_wrong_parameter_count():
    with pytest.raises(ValueError, match="expected 6 parameters for m=4, got 5"):
        linalg.cayley_elimination(torch.zeros(3, 5), 4)


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


def _sinkhorn_naive(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """Sinkhorn in the linear domain, entry by entry in float64: ``K = exp(L)``, then ``iters``
    rounds of dividing every column, then every row, by its sum."""
    k = logits.double().exp().tolist()
    n = len(k)
    for _ in range(iters):
        for j in range(n):
            col = sum(k[i][j] for i in range(n))
            for i in range(n):
                k[i][j] /= col
        for i in range(n):
            row = sum(k[i])
            k[i] = [v / row for v in k[i]]
    return torch.tensor(k, dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("iters", [1, 2, 7, 20])
def test_sinkhorn_matches_a_naive_linear_domain_reference(n, iters):
    gen = torch.Generator().manual_seed(10 * n + iters)
    logits = 2 * torch.randn(5, n, n, dtype=torch.float64, generator=gen)
    h = linalg.sinkhorn_log(logits, iters)
    assert h.shape == logits.shape and h.dtype == torch.float64
    expected = torch.stack([_sinkhorn_naive(m, iters) for m in logits])
    torch.testing.assert_close(h, expected, rtol=1e-12, atol=1e-14)
    # float32 agrees with the float64 reference to float32 rounding
    torch.testing.assert_close(linalg.sinkhorn_log(logits.float(), iters).double(), expected, rtol=0, atol=1e-5)


def test_sinkhorn_rows_exact_columns_converge():
    logits = torch.randn(100, 4, 4, dtype=torch.float64)
    h = linalg.sinkhorn_log(logits, 50)
    torch.testing.assert_close(h.sum(-1), torch.ones(100, 4, dtype=torch.float64))
    assert (h.sum(-2) - 1).abs().max() < 1e-6
    assert torch.all(h >= 0)
    # the column error after one round is far larger than after 50: the iterations do the work
    assert (linalg.sinkhorn_log(logits, 1).sum(-2) - 1).abs().max() > 1e-3


def test_sinkhorn_survives_logits_whose_exp_overflows():
    """Log-domain: logits of +-800 (``exp`` is inf / 0 in float64) still give finite stochastic rows."""
    logits = 800 * torch.randn(20, 4, 4, dtype=torch.float64)
    h = linalg.sinkhorn_log(logits, 20)
    assert torch.isfinite(h).all() and torch.all(h >= 0)
    torch.testing.assert_close(h.sum(-1), torch.ones(20, 4, dtype=torch.float64))


def test_sinkhorn_fixed_points_and_column_shift_invariance():
    n = 4
    # equal logits -> J = 11^T / n after one round; the log of a doubly stochastic matrix is a fixed point
    torch.testing.assert_close(
        linalg.sinkhorn_log(torch.zeros(n, n, dtype=torch.float64), 1), torch.full((n, n), 1 / n, dtype=torch.float64)
    )
    doubly = 0.96 * linalg.permutation_matrices(n, torch.float64)[7] + 0.01
    for iters in (1, 200):
        torch.testing.assert_close(linalg.sinkhorn_log(doubly.log(), iters), doubly)
    # the first column step removes any per-column constant
    logits = torch.randn(3, n, n, dtype=torch.float64)
    shift = 5 * torch.randn(3, 1, n, dtype=torch.float64)
    torch.testing.assert_close(linalg.sinkhorn_log(logits + shift, 3), linalg.sinkhorn_log(logits, 3))


@pytest.mark.parametrize("iters", [1, 5])
def test_sinkhorn_gradcheck(iters):
    logits = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: linalg.sinkhorn_log(t, iters), (logits,))
    if iters == 1:  # second derivatives of one round (more rounds repeat the same ops)
        assert torch.autograd.gradgradcheck(lambda t: linalg.sinkhorn_log(t, iters), (logits[:1],))


@pytest.mark.parametrize("iters", [0, -1, 2.0, True, "3"])
def test_sinkhorn_refuses_a_bad_iteration_count(iters):
    with pytest.raises(ValueError, match=r"sinkhorn_log: iters must be an integer >= 1, got"):
        linalg.sinkhorn_log(torch.zeros(2, 2), iters)


def _sinkhorn_per_step(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """The unrolled iterations as plain autograd ops on the logits' own layout: the
    implementation ``sinkhorn_log``'s batch-last autograd node must reproduce."""
    for _ in range(iters - 1):
        logits = torch.log_softmax(torch.log_softmax(logits, dim=-2), dim=-1)
    return torch.softmax(torch.log_softmax(logits, dim=-2), dim=-1)


def _coefficient_logits(lead: tuple[int, ...], n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """(..., n, n) logits as the connection hands them over: a strided view of a wider
    (..., 2n + n^2) coefficient tensor, which is the leaf."""
    gen = torch.Generator().manual_seed(seed)
    coef = (2 * torch.randn(*lead, 2 * n + n * n, dtype=torch.float64, generator=gen)).to(dtype).requires_grad_()
    return coef, coef[..., 2 * n :].reshape(*lead, n, n)


@pytest.mark.parametrize("iters", [1, 2, 20])
@pytest.mark.parametrize("lead", [(), (7,), (3, 5)])
@pytest.mark.parametrize("n", [2, 4])
def test_sinkhorn_equals_the_per_step_autograd_loop(iters, lead, n):
    """Values to rounding and the exact gradient of the unrolled iterations, float64 and float32,
    with and without a graph, on the connection's strided logits."""
    for dtype, rtol, atol, grad_tol in ((torch.float64, 1e-12, 1e-14, 1e-10), (torch.float32, 1e-6, 1e-6, 1e-5)):
        coef, logits = _coefficient_logits(lead, n, dtype, seed=iters + n)
        expected = _sinkhorn_per_step(logits, iters)
        h = linalg.sinkhorn_log(logits, iters)
        assert h.shape == logits.shape and h.dtype == dtype and h.is_contiguous()
        torch.testing.assert_close(h, expected, rtol=rtol, atol=atol)
        with torch.no_grad():
            torch.testing.assert_close(linalg.sinkhorn_log(logits, iters), expected, rtol=rtol, atol=atol)
        grad = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
        (want,) = torch.autograd.grad(expected, coef, grad)
        (got,) = torch.autograd.grad(h, coef, grad)
        torch.testing.assert_close(got, want, rtol=grad_tol, atol=grad_tol)


def test_sinkhorn_gradient_on_rectangular_and_empty_batches():
    for shape in ((4, 3, 5), (0, 4, 4), (3, 0, 0), (4, 4)):
        logits = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(shape, dtype=torch.float64)
        (want,) = torch.autograd.grad(_sinkhorn_per_step(logits, 3), logits, grad)
        h = linalg.sinkhorn_log(logits, 3)
        assert h.shape == shape
        (got,) = torch.autograd.grad(h, logits, grad)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("iters", [3, 20])
def test_sinkhorn_gradcheck_more_rounds_and_second_derivatives(iters):
    logits = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: linalg.sinkhorn_log(t, iters), (logits,))
    # create_graph: the backward re-runs the per-step loop, so second derivatives are autograd's
    assert torch.autograd.gradgradcheck(lambda t: linalg.sinkhorn_log(t, 3), (logits[:1],))


def test_sinkhorn_retained_graph_and_recompute():
    coef, logits = _coefficient_logits((6,), 4, torch.float64, seed=5)
    grad = torch.randn(6, 4, 4, dtype=torch.float64)
    (want,) = torch.autograd.grad(_sinkhorn_per_step(logits, 20), coef, grad)
    h = linalg.sinkhorn_log(logits, 20)
    for _ in range(2):  # the saved steps survive a first backward
        (got,) = torch.autograd.grad(h, coef, grad, retain_graph=True)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for reentrant in (False, True):
        leaf = coef.detach().requires_grad_()
        out = torch.utils.checkpoint.checkpoint(
            lambda c: linalg.sinkhorn_log(c[..., 8:].reshape(6, 4, 4), 20), leaf, use_reentrant=reentrant
        )
        out.backward(grad)
        torch.testing.assert_close(leaf.grad, want, rtol=1e-10, atol=1e-12)


def test_sinkhorn_dtypes_and_autocast():
    logits = torch.randn(10, 4, 4)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = logits.to(dtype).requires_grad_()
        h = linalg.sinkhorn_log(x, 20)
        assert h.dtype == dtype
        torch.testing.assert_close(h.float(), _sinkhorn_per_step(logits.to(dtype), 20).float(), rtol=0, atol=2e-2)
        h.float().square().sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    # under autocast the per-step loop runs as it is: whatever autocast does to each step
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = logits.bfloat16()
        assert torch.equal(linalg.sinkhorn_log(x, 5), _sinkhorn_per_step(x, 5))
    # a device without autocast (shapes only)
    meta = torch.empty(2, 3, 4, 4, device="meta", requires_grad=True)
    linalg.sinkhorn_log(meta, 3).sum().backward()
    assert meta.grad.shape == meta.shape


@pytest.mark.slow
def test_sinkhorn_compiles_fullgraph():
    coef, logits = _coefficient_logits((4, 3), 4, torch.float32, seed=2)
    compiled = torch.compile(lambda t: linalg.sinkhorn_log(t, 20), fullgraph=True)
    h = compiled(logits)
    torch.testing.assert_close(h, _sinkhorn_per_step(logits, 20), rtol=1e-5, atol=1e-6)
    (got,) = torch.autograd.grad(h.square().sum(), coef)
    (want,) = torch.autograd.grad(_sinkhorn_per_step(logits, 20).square().sum(), coef)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("m", [2, 3])
def test_cayley_quadratic_map_reproduces_the_closed_form(m):
    k = m * (m - 1) // 2
    z = 3 * torch.randn(40, k, dtype=torch.float64)
    z1 = torch.cat([torch.ones(40, 1, dtype=torch.float64), z], dim=-1)
    out = (z1.unsqueeze(-1) * z1.unsqueeze(-2)).reshape(40, -1) @ linalg.cayley_quadratic_map(m)
    numerator, denominator = out[:, : m * m].reshape(40, m, m), out[:, m * m :]
    torch.testing.assert_close(denominator, 1 + (z * z).sum(-1, keepdim=True))
    torch.testing.assert_close(numerator / denominator.unsqueeze(-1), _cayley_by_solve(z, m))


def test_cayley_quadratic_map_refuses_other_sizes():
    with pytest.raises(ValueError, match="m = 2 or 3, got m=4"):
        linalg.cayley_quadratic_map(4)
