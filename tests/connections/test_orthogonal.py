"""The orthogonal kind (oHC): H_res in SO(n) by the Cayley map, for every n >= 2."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support import perturbed_connection

import hyperconn
from hyperconn.connections.invariants import violations
from hyperconn.connections.reference import naive_forward, naive_mixing


def _branch(u):
    return torch.tanh(u) * 1.5 + 0.1


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 9), scale=st.floats(0.0, 2.0), seed=st.integers(0, 10_000))
def test_rotation_for_random_inputs_and_parameters(n, scale, seed):
    conn = perturbed_connection("orthogonal", n, 6, scale=scale, seed=seed).double()
    x = torch.randn(16, n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    res = conn.mixing(x).res
    worst = {k: float(v.max()) for k, v in violations(("orthogonal", "determinant_one"), res).items()}
    assert worst["orthogonal"] < 1e-12 and worst["determinant_one"] < 1e-12, worst


def test_the_all_ones_direction_is_not_fixed():
    """oHC rotates the streams' mean too (not sHC's sphere): row sums move off 1 once trained."""
    conn = perturbed_connection("orthogonal", 4, 8, scale=1.0, seed=0).double()
    res = conn.mixing(torch.randn(32, 4, 8, dtype=torch.float64)).res
    assert (res.sum(-1) - 1).abs().max() > 1e-2


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_identity_at_init_and_k_angles(n):
    conn = hyperconn.make_connection("orthogonal", n, 8)
    res = conn.mixing(torch.randn(5, n, 8)).res
    torch.testing.assert_close(res, torch.eye(n).expand_as(res), rtol=0, atol=0)
    assert conn.group_sizes == (n, n, n * (n - 1) // 2)
    torch.testing.assert_close(conn.initial_res(), torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_equals_the_naive_solve_reference(n):
    conn = perturbed_connection("orthogonal", n, 8, scale=0.7, seed=n).double()
    x = torch.randn(3, n, 8, dtype=torch.float64)
    torch.testing.assert_close(conn.mixing(x).res, naive_mixing(conn, x)[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conn(x, _branch), naive_forward(conn, x, _branch), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [3, 5])
def test_gradients_equal_the_naive_reference(n):
    conn = perturbed_connection("orthogonal", n, 6, scale=0.5, seed=1).double()
    x = torch.randn(4, n, 6, dtype=torch.float64)
    fast = torch.autograd.grad(conn(x, _branch).square().sum(), list(conn.parameters()))
    state = {k: v.detach().clone().requires_grad_(True) for k, v in conn.state_dict().items()}
    names = [k for k, _ in conn.named_parameters()]
    slow = torch.autograd.grad(naive_forward(conn, x, _branch, state).square().sum(), [state[k] for k in names])
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
