"""The module agrees with the naive transcription of the papers' math (docs/design.md): values and gradients."""

import pytest
import torch
from tests.support import perturbed_connection

from hyperconn.connections.reference import naive_forward, naive_mixing

from .helpers import CASES

DIM = 6


def branch(u):
    return torch.sin(u) * 1.5


@pytest.mark.parametrize("kind,n", CASES)
def test_forward_matches_naive_reference(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3).double()
    x = torch.randn(2, 5, n, DIM, dtype=torch.float64)
    torch.testing.assert_close(conn(x, branch), naive_forward(conn, x, branch))
    for got, want in zip(conn.mixing(x), naive_mixing(conn, x), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind,n", CASES)
def test_gradients_match_naive_reference(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3).double()
    x = torch.randn(7, n, DIM, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, n, DIM, dtype=torch.float64)

    (conn(x, branch) * weight).sum().backward()
    def grad_of(t):  # a parameter the math does not reach (shc's rotations at n = 2) has no grad
        return torch.zeros_like(t) if t.grad is None else t.grad.clone()

    got = [x.grad.clone()] + [grad_of(p) for p in conn.parameters()]

    x.grad = None
    state = {name: p.detach().clone().requires_grad_(True) for name, p in conn.named_parameters()}
    state.update({name: b for name, b in conn.named_buffers()})
    (naive_forward(conn, x, branch, state) * weight).sum().backward()
    want = [x.grad] + [grad_of(state[name]) for name, _ in conn.named_parameters()]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_shc_float64_gradcheck(n):
    conn = perturbed_connection("shc", n, 4, scale=0.5).double()
    x = torch.randn(3, n, 4, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in conn.named_parameters()]

    def fn(x, *ps):
        return torch.func.functional_call(conn, dict(zip(names, ps, strict=True)), (x, branch))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in conn.parameters()])
    assert torch.autograd.gradcheck(fn, inputs)
