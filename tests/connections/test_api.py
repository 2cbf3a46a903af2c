"""The public API: factory, forward == the mixing formula, dtypes, torch.compile, bad input."""

import math

import pytest
import torch
from tests.support import perturbed_connection

import hyperconn

from .helpers import CASES

DIM = 8


def test_available_connections():
    assert hyperconn.available_connections() == (
        "residual", "hc", "mhc", "mhc_lite", "kromhc", "shc", "identity", "orthogonal"
    )


@pytest.mark.parametrize("kind,n", CASES)
def test_forward_equals_formula_built_from_mixing(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    x = torch.randn(2, 3, n, DIM)
    linear = torch.nn.Linear(DIM, DIM)
    pre, res, post = conn.mixing(x)
    assert pre.shape == (2, 3, n) and res.shape == (2, 3, n, n) and post.shape == (2, 3, n)
    u = torch.einsum("...s,...sc->...c", pre, x)
    expected = torch.einsum("...st,...sc->...tc", res, x) + post[..., None] * linear(u)[..., None, :]
    out = conn(x, linear)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # width + depth is the same computation, for callers that run the branch themselves
    branch_in, mixed, h_post = conn.width(x)
    torch.testing.assert_close(branch_in, u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conn.depth(mixed, h_post, linear(branch_in)), out)


@pytest.mark.parametrize("kind,n", CASES)
def test_bf16_autocast_keeps_stream_dtype_and_float32_coefficients(kind, n):
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    linear = torch.nn.Linear(DIM, DIM)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(4, n, DIM).to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conn(x, linear)
            pre, res, post = conn.mixing(x)
        assert out.dtype == dtype
        assert pre.dtype == res.dtype == post.dtype == torch.float32
        reference = conn(x.float(), linear)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)
    if kind in ("mhc_lite", "kromhc", "shc"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            res = conn.mixing(torch.randn(4, n, DIM).bfloat16()).res
        assert (res.sum(-1) - 1).abs().max() < 1e-5 and (res.sum(-2) - 1).abs().max() < 1e-5


@pytest.mark.parametrize("kind,n", CASES)
def test_bf16_module_keeps_exact_constants(kind, n):
    conn = hyperconn.make_connection(kind, n, DIM).bfloat16()
    # floating buffers (Helmert basis, J, permutation matrices) stay float64 under .bfloat16()
    assert all(b.dtype == torch.float64 for b in conn.buffers() if b.is_floating_point())
    out = conn(torch.randn(3, n, DIM).bfloat16(), lambda u: u)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("kind", hyperconn.available_connections())
@pytest.mark.slow
def test_compile_fullgraph_forward_and_backward(kind):
    n = 1 if kind == "residual" else 4
    conn = perturbed_connection(kind, n, DIM, scale=0.2)
    linear = torch.nn.Linear(DIM, DIM)
    x = torch.randn(2, 5, n, DIM)

    x_eager = x.clone().requires_grad_(True)
    conn(x_eager, linear).square().sum().backward()
    eager_grads = [x_eager.grad] + [p.grad.clone() for p in conn.parameters()]
    conn.zero_grad()

    compiled = torch.compile(conn, fullgraph=True)
    x_comp = x.clone().requires_grad_(True)
    compiled(x_comp, linear).square().sum().backward()
    comp_grads = [x_comp.grad] + [p.grad for p in conn.parameters()]
    for a, b in zip(eager_grads, comp_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind,n", CASES)
def test_parameter_count_matches_module(kind, n):
    conn = hyperconn.make_connection(kind, n, DIM)
    assert hyperconn.connection_parameter_count(kind, n, DIM) == sum(p.numel() for p in conn.parameters())


def test_parameter_count_formulas():
    n, c = 4, 16

    def coefficient_kind(res_count, gates, extra=0):
        total = 2 * n + res_count  # H_pre, H_post and the residual coefficients
        return n * c + n * c * total + gates + total + extra  # norm gain, W, gates, biases

    assert hyperconn.connection_parameter_count("residual", 1, c) == 0
    assert hyperconn.connection_parameter_count("hc", n, c) == c + c * (n + 1) + 1 + n * (n + 1) + c + 1 + n
    assert hyperconn.connection_parameter_count("mhc", n, c) == coefficient_kind(n * n, 3)
    assert hyperconn.connection_parameter_count("mhc_lite", n, c) == coefficient_kind(math.factorial(n), 3)
    assert hyperconn.connection_parameter_count("kromhc", n, c) == coefficient_kind(2 * 2, 3)
    assert hyperconn.connection_parameter_count("shc", n, c) == coefficient_kind((n - 1) ** 2, 5, extra=2)
    # counting needs no allocation: mhc_lite at n = 8 has 40320 coefficients per token
    assert hyperconn.connection_parameter_count("mhc_lite", 8, 1024) > 8 * 1024 * 40320


def test_expand_and_reduce_streams():
    h = torch.randn(2, 3, DIM)
    x = hyperconn.expand_streams(h, 4)
    assert x.shape == (2, 3, 4, DIM)
    torch.testing.assert_close(x[..., 2, :], h)
    torch.testing.assert_close(hyperconn.reduce_streams(x), 4 * h)
    with pytest.raises(ValueError, match="num_streams must be an integer >= 1, got 0"):
        hyperconn.expand_streams(h, 0)
    with pytest.raises(ValueError, match=r"reduce_streams needs streams of shape \(\.\.\., n, C\), got a 1-D tensor"):
        hyperconn.reduce_streams(torch.randn(DIM))
    torch.testing.assert_close(hyperconn.reduce_streams(x, num_streams=4), 4 * h)


def test_reduce_streams_on_a_hidden_state_warns_or_refuses(recwarn):
    hidden = torch.randn(2, 8, 64)  # (batch, tokens, C): not a streams tensor
    with pytest.warns(UserWarning, match=r"3-D tensor \(2, 8, 64\) as 8 streams.*pass num_streams="):
        hyperconn.reduce_streams(hidden)
    with pytest.raises(ValueError, match=r"streams must have shape \(\.\.\., n=4, C\), got \(2, 8, 64\)"):
        hyperconn.reduce_streams(hidden, num_streams=4)
    hyperconn.reduce_streams(torch.randn(2, 8, 4, 64))  # 4-D: (batch, tokens, n, C), no warning
    assert not recwarn.list


@pytest.mark.parametrize(
    "args,options,message",
    [
        (("bogus", 4, DIM), {}, r"unknown connection kind 'bogus'; choose one of residual, hc, mhc, mhc_lite"),
        (("shc", 0, DIM), {}, r"shc: num_streams must be an integer >= 2, got 0"),
        (("residual", 2, DIM), {}, r"residual: num_streams must be 1, got 2"),
        (("shc", 1, DIM), {}, r"shc: num_streams must be an integer >= 2, got 1 \(one stream: use kind 'residual'\)"),
        (("hc", 1, DIM), {}, r"hc: num_streams must be an integer >= 2, got 1"),
        (("mhc", 1, DIM), {}, r"mhc: num_streams must be an integer >= 2, got 1"),
        (("shc", 4.0, 16), {}, r"shc: num_streams must be an integer >= 2, got 4.0"),
        (("shc", "4", 16), {}, r"shc: num_streams must be an integer >= 2, got '4'"),
        (("kromhc", "4", 16), {}, r"kromhc: num_streams must be an integer >= 2, got '4'"),
        (("shc", 4, 16.0), {}, r"shc: dim must be an integer >= 1, got 16.0"),
        (("shc", 4, 16), {"sigma_bias": "x"}, r"shc: sigma_bias must be a finite number, got 'x'"),
        (("mhc", 4, 16), {"eps": "1e-6"}, r"mhc: eps must be a finite number > 0, got '1e-6'"),
        (("kromhc", 6, DIM), {}, r"kromhc: num_streams must be a power of two >= 2, got 6"),
        (("mhc_lite", 9, DIM), {}, r"mhc_lite: num_streams must be <= 8 .* got 9"),
        (("mhc", 4, DIM), {"sinkhorn_iters": 0}, r"sinkhorn_iters must be an integer >= 1, got 0"),
        (("shc", 4, DIM), {"sinkhorn_iters": 5}, r"shc: unknown option\(s\) sinkhorn_iters; allowed: .*sigma_bias"),
        (("shc", 4, 0), {}, r"dim must be an integer >= 1, got 0"),
    ],
)
def test_bad_construction_raises_clear_value_error(args, options, message):
    with pytest.raises(ValueError, match=message):
        hyperconn.make_connection(*args, **options)


@pytest.mark.parametrize("kind", hyperconn.available_connections())
def test_bad_stream_shape_raises(kind):
    n = 1 if kind == "residual" else 4
    conn = hyperconn.make_connection(kind, n, DIM)
    for bad in (torch.randn(3, n + 1, DIM), torch.randn(3, n, DIM + 1), torch.randn(DIM)):
        with pytest.raises(ValueError, match=rf"streams must have shape \(\.\.\., n, dim\) = \(\.\.\., {n}, {DIM}\)"):
            conn(bad, lambda u: u)
        with pytest.raises(ValueError, match="streams must have shape"):
            conn.mixing(bad)


@pytest.mark.parametrize("kind", hyperconn.available_connections())
def test_bad_stream_values_and_branches_raise_clear_value_errors(kind):
    n = 1 if kind == "residual" else 4
    conn = hyperconn.make_connection(kind, n, DIM)
    with pytest.raises(ValueError, match=rf"{kind}: streams must be a floating-point tensor, got dtype torch.int64"):
        conn(torch.ones(3, n, DIM, dtype=torch.long), lambda u: u)
    with pytest.raises(ValueError, match=rf"{kind}: streams hold zero tokens \(shape \(0, {n}, {DIM}\)\)"):
        conn(torch.randn(0, n, DIM), lambda u: u)
    branch_message = rf"{kind}: the branch must return one tensor of shape \(\.\.\., {DIM}\), got tuple"
    with pytest.raises(ValueError, match=branch_message):
        conn(torch.randn(3, n, DIM), lambda u: (u, None))
    width = torch.nn.Linear(DIM, 2 * DIM)  # a branch that changes the width
    message = rf"{kind}: the branch took \(3, {DIM}\) and returned \(3, {2 * DIM}\); a branch must keep the shape"
    for mode in (torch.enable_grad, torch.no_grad):
        with mode(), pytest.raises(ValueError, match=message):
            conn(torch.randn(3, n, DIM), width)
