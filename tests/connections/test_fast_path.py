"""The fast path (what ``make_connection`` returns) equals the naive official math.

Float32 streams are compared at float32 tolerance; bfloat16 streams against the float32
reference evaluated at the same (bf16-representable) inputs: the fast path computes in float32
and rounds each stream-sized output to bfloat16 once, so outputs must agree to a few bf16 ulps
(``BF16_TOL``: atol = rtol = 2e-2; a bf16 ulp is 2^-8 = 0.0039 relative). Gradients in bf16
also carry the branch's own bf16 rounding summed over tokens, so they are compared in norm:
``||g - g_ref|| <= BF16_GRAD_REL * ||g_ref||`` (measured 0.1-3%, per tensor).
``recompute=True`` must give the same values and bit-identical gradients.
"""

import pytest
import torch
from tests.support import perturbed_connection

import hyperconn
from hyperconn.connections.reference import naive_forward

DIM = 24
BF16_TOL = {"atol": 2e-2, "rtol": 2e-2}
BF16_GRAD_REL = 0.06

FAST_CASES = [
    ("residual", 1),
    ("hc", 2),
    ("hc", 4),
    ("mhc", 3),
    ("mhc", 4),
    ("mhc_lite", 3),
    ("kromhc", 4),
    ("kromhc", 8),
    ("shc", 2),
    ("shc", 4),
    ("shc", 5),
]
LEADING = [(), pytest.param((9,), marks=pytest.mark.slow), (2, 3)]  # make test-fast: no and two leading dims


def branch(u):
    return torch.tanh(u) * 1.5


def _grads(conn, x, weight, forward):
    params = dict(conn.named_parameters())
    x = x.detach().clone().requires_grad_(True)
    state = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    state.update(dict(conn.named_buffers()))
    out = forward(x, state)
    (out.float() * weight).sum().backward()
    grads = [x.grad] + [
        torch.zeros_like(state[name]) if state[name].grad is None else state[name].grad for name in params
    ]
    return out.detach(), grads


def _fast(conn):
    def run(x, state):
        with torch.nn.utils.stateless._reparametrize_module(conn, state):
            return conn(x, branch)

    return run


def _naive(conn):
    return lambda x, state: naive_forward(conn, x, branch, state)


@pytest.mark.parametrize("leading", LEADING, ids=str)
@pytest.mark.parametrize("kind,n", FAST_CASES)
def test_fast_equals_naive_float32(kind, n, leading):
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(*leading, n, DIM, generator=gen)
    weight = torch.randn(*leading, n, DIM, generator=gen)
    got, got_grads = _grads(conn, x, weight, _fast(conn))
    want, want_grads = _grads(conn, x, weight, _naive(conn))
    assert got.dtype == torch.float32 and got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("kind,n", FAST_CASES)
def test_fast_bfloat16_streams_match_float32_reference(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 6, n, DIM, generator=gen).bfloat16()
    weight = torch.randn(4, 6, n, DIM, generator=gen)
    got, got_grads = _grads(conn, x, weight, _fast(conn))
    want, want_grads = _grads(conn, x.float(), weight, _naive(conn))
    assert got.dtype == torch.bfloat16
    assert got_grads[0].dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, **BF16_TOL)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g.shape == w.shape
        assert (g.float() - w).norm() <= BF16_GRAD_REL * w.norm() + 1e-6


@pytest.mark.parametrize("kind,n", FAST_CASES)
def test_fast_under_bfloat16_autocast_keeps_coefficients_float32(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    x = torch.randn(5, n, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mix = conn.mixing(x)
        out = conn(x, branch)
    assert all(t.dtype == torch.float32 for t in mix)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive_forward(conn, x, branch), **BF16_TOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind,n", FAST_CASES)
def test_recompute_gives_identical_gradients(kind, n, dtype):
    plain = perturbed_connection(kind, n, DIM, scale=0.3)
    again = hyperconn.make_connection(kind, n, DIM, layer_index=1, recompute=True)
    again.load_state_dict(plain.state_dict())
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, n, DIM, generator=gen).to(dtype)
    weight = torch.randn(3, 4, n, DIM, generator=gen)
    got, got_grads = _grads(again, x, weight, _fast(again))
    want, want_grads = _grads(plain, x, weight, _fast(plain))
    assert torch.equal(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("kind", ["hc", "mhc", "shc"])
def test_recompute_is_inactive_without_grad(kind):
    conn = hyperconn.make_connection(kind, 4, DIM, recompute=True)
    x = torch.randn(2, 4, DIM)
    with torch.no_grad():
        torch.testing.assert_close(conn(x, branch), naive_forward(conn, x, branch), atol=1e-5, rtol=1e-4)


def test_recompute_is_an_option_of_every_kind():
    for kind in hyperconn.available_connections():
        assert "recompute" in hyperconn.connections.connection_options(kind)


def test_double_backward_raises_instead_of_being_wrong():
    conn = perturbed_connection("shc", 4, DIM, scale=0.3)
    x = torch.randn(3, 4, DIM, requires_grad=True)
    (grad,) = torch.autograd.grad(conn(x, branch).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()
