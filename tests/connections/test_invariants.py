"""Property-based invariants of H_res over n and random parameters (every parameter perturbed)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import perturbed_connection

import hyperconn

DIM = 6
PROPERTY_SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Sinkhorn with 20 iterations: rows sum to 1 to rounding; columns only approximately. The column
# error grows with the spread of the logits (the "Sinkhorn error" of the paper's claim 3): with
# every parameter perturbed by N(0, 0.1^2) it stays below this bound for n <= 8.
MHC_COLUMN_TOLERANCE = 5e-3


def res_of(kind, n, scale, seed, tokens=16):
    conn = perturbed_connection(kind, n, DIM, scale=scale, seed=seed).double()
    x = torch.randn(tokens, n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return conn.mixing(x).res


@PROPERTY_SETTINGS
@given(n=st.integers(2, 8), scale=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_shc_on_the_spectral_sphere(n, scale, seed):
    res = res_of("shc", n, scale, seed)
    ones = torch.ones(res.shape[:-1], dtype=res.dtype)
    torch.testing.assert_close(res.sum(-1), ones, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.sum(-2), ones, atol=1e-5, rtol=0)
    singular = torch.linalg.svdvals(res)
    assert (singular[..., 0] - 1).abs().max() < 1e-5


@PROPERTY_SETTINGS
@given(n=st.integers(2, 8), scale=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_shc_singular_values_are_one_and_abs_sigma(n, scale, seed):
    conn = perturbed_connection("shc", n, DIM, scale=scale, seed=seed).double()
    x = torch.randn(8, n, DIM, dtype=torch.float64)
    res = conn.mixing(x).res
    # sigma and the rotations, recomputed from the public coefficient groups
    coef = conn.coefficients(x)
    k = (n - 1) * (n - 2) // 2
    sigma = torch.tanh(coef[..., 2 * n + 2 * k :])
    expected = torch.cat([torch.ones(8, 1, dtype=torch.float64), sigma.abs()], dim=-1)
    torch.testing.assert_close(
        torch.linalg.svdvals(res), expected.sort(dim=-1, descending=True).values, atol=1e-9, rtol=0
    )
    if k == 0:  # n = 2: no rotations, and no gamma parameter
        assert conn.gamma is None
        return
    gamma = conn.gamma.detach()
    for g, z in ((gamma[0], coef[..., 2 * n : 2 * n + k]), (gamma[1], coef[..., 2 * n + k : 2 * n + 2 * k])):
        u = hyperconn.linalg.cayley_from_params(g * torch.tanh(z), n - 1)
        eye = torch.eye(n - 1, dtype=torch.float64)
        torch.testing.assert_close(u @ u.transpose(-1, -2), eye.expand_as(u))


@pytest.mark.parametrize("kind", ["mhc_lite", "kromhc"])
@PROPERTY_SETTINGS
@given(log2n=st.integers(1, 3), scale=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_exact_birkhoff_kinds_doubly_stochastic(kind, log2n, scale, seed):
    n = 2**log2n if kind == "kromhc" else log2n + 1  # mhc_lite: n in 2..4 keeps n! small
    res = res_of(kind, n, scale, seed)
    ones = torch.ones(res.shape[:-1], dtype=res.dtype)
    torch.testing.assert_close(res.sum(-1), ones, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.sum(-2), ones, atol=1e-5, rtol=0)
    assert torch.all(res >= 0)


@PROPERTY_SETTINGS
@given(n=st.integers(2, 8), scale=st.floats(0.0, 0.1), seed=st.integers(0, 10_000))
def test_mhc_rows_exact_columns_within_sinkhorn_tolerance(n, scale, seed):
    res = res_of("mhc", n, scale, seed)
    assert torch.all(res >= 0)
    assert (res.sum(-1) - 1).abs().max() < 1e-9
    assert (res.sum(-2) - 1).abs().max() < MHC_COLUMN_TOLERANCE


def test_mhc_column_error_shrinks_with_iterations():
    x = torch.randn(32, 4, DIM)
    errors = []
    for iters in (1, 5, 20, 100):
        conn = perturbed_connection("mhc", 4, DIM, scale=0.3, seed=3, sinkhorn_iters=iters)
        errors.append((conn.mixing(x).res.sum(-2) - 1).abs().max().item())
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < errors[0]


def test_mhc_lite_refuses_more_than_eight_streams_but_accepts_eight():
    assert hyperconn.make_connection("mhc_lite", 8, 2).mixing(torch.randn(3, 8, 2)).res.shape == (3, 8, 8)


@pytest.mark.parametrize("n", [3, 4, 8])
def test_shc_reaches_negative_entries(n):
    # sigma -> -1 gives H = J - (I - J): diagonal 2/n - 1 < 0 for n >= 3
    conn = hyperconn.make_connection("shc", n, DIM, sigma_bias=-4.0)
    res = conn.mixing(torch.randn(5, n, DIM)).res
    assert res.min() < -0.3
    assert (torch.linalg.matrix_norm(res, ord=2) - 1).abs().max() < 1e-5
    # rotations alone also create negative entries
    rotated = perturbed_connection("shc", n, DIM, scale=1.0, seed=1).mixing(torch.randn(64, n, DIM)).res
    assert (rotated < -1e-6).any()


def test_shc_two_streams_stays_in_birkhoff_polytope():
    res = perturbed_connection("shc", 2, DIM, scale=1.0, seed=5).mixing(torch.randn(64, 2, DIM)).res
    assert torch.all(res >= -1e-7)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_shc_composites_over_depth_stay_on_the_sphere(n):
    layers = [perturbed_connection("shc", n, DIM, scale=1.0, seed=s).double() for s in range(64)]
    x = torch.randn(4, n, DIM, dtype=torch.float64)
    composite = torch.eye(n, dtype=torch.float64).expand(4, n, n)
    for conn in layers:
        composite = composite @ conn.mixing(x).res
    ones = torch.ones(4, n, dtype=torch.float64)
    torch.testing.assert_close(composite.sum(-1), ones, atol=1e-5, rtol=0)
    torch.testing.assert_close(composite.sum(-2), ones, atol=1e-5, rtol=0)
    assert torch.linalg.matrix_norm(composite, ord=2).max() <= 1 + 1e-4
