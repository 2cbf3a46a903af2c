"""Connections built without H_res (``mix_streams=False``): H_res = I, no H_res parameters, every
path (autograd, no-grad decode, recompute, kernels) computing ``x'_j = x_j + H_post[j] F(u)``."""

from __future__ import annotations

import pytest
import torch
from tests.support import perturbed_connection

import hyperconn
from hyperconn.connections import connection_class, connection_parameter_count

C = 12
SKIPPABLE = [("mhc", 2), ("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("kromhc", 8), ("shc", 2), ("shc", 3), ("shc", 4),
             ("shc", 5)]  # fmt: skip


def naive(conn, x, branch):
    """``u = sum_i H_pre[i] x_i``, ``x'_j = x_j + H_post[j] F(u)``, from ``mixing``'s pre and post."""
    pre, _, post = conn.mixing(x)
    u = torch.einsum("...s,...sd->...d", pre.to(x.dtype), x)
    return x + post.to(x.dtype)[..., None] * branch(u)[..., None, :]


@pytest.mark.parametrize(("kind", "n"), SKIPPABLE)
def test_no_res_parameters_and_identity_mixing(kind, n):
    conn = perturbed_connection(kind, n, C, mix_streams=False).double()
    assert conn.mixes_streams is False and conn.group_sizes == (n, n)
    # RMSNorm gain, projection onto the 2n pre/post coefficients, 2 gates, 2n biases; nothing else
    assert sum(p.numel() for p in conn.parameters()) == n * C + n * C * 2 * n + 2 + 2 * n
    assert connection_parameter_count(kind, n, C, mix_streams=False) == n * C + n * C * 2 * n + 2 + 2 * n
    assert connection_parameter_count(kind, n, C) > connection_parameter_count(kind, n, C, mix_streams=False)
    x = torch.randn(3, 5, n, C, dtype=torch.float64)
    res = conn.mixing(x).res
    assert res.shape == (3, 5, n, n) and torch.equal(res, torch.eye(n, dtype=torch.float64).expand(3, 5, n, n))


@pytest.mark.parametrize(("kind", "n"), SKIPPABLE)
def test_pre_and_post_match_the_mixing_connection(kind, n):
    """Dropping H_res leaves H_pre and H_post as they were: same parameters -> same coefficients."""
    full = perturbed_connection(kind, n, C).double()
    bare = hyperconn.make_connection(kind, n, C, layer_index=1, mix_streams=False).double()
    with torch.no_grad():
        for name, p in bare.named_parameters():
            p.copy_(getattr(full, name)[tuple(slice(0, s) for s in p.shape)])
    x = torch.randn(4, n, C, dtype=torch.float64)
    got, want = bare.mixing(x), full.mixing(x)
    torch.testing.assert_close(got.pre, want.pre, rtol=0, atol=1e-14)
    torch.testing.assert_close(got.post, want.post, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("kind", "n"), SKIPPABLE)
def test_forward_and_gradients_match_the_naive_form(kind, n):
    conn = perturbed_connection(kind, n, C, mix_streams=False).double()
    weight = torch.randn(C, C, dtype=torch.float64)
    branch = lambda u: torch.tanh(u @ weight)  # noqa: E731
    x = torch.randn(2, 3, n, C, dtype=torch.float64, requires_grad=True)
    out = conn(x, branch)
    ref = naive(conn, x, branch)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    probe = torch.randn_like(out)
    params = [x, *conn.parameters()]
    got = torch.autograd.grad((out * probe).sum(), params)
    want = torch.autograd.grad((ref * probe).sum(), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    assert all(g.abs().max() > 0 for g in got)  # every parameter is used


@pytest.mark.parametrize(("kind", "n"), SKIPPABLE)
def test_no_grad_path_and_recompute_agree(kind, n):
    conn = perturbed_connection(kind, n, C, mix_streams=False)
    x = torch.randn(2, 3, n, C)
    u, mixed, post = conn.width(x)
    assert mixed is x  # the streams pass through: nothing is mixed or copied
    with torch.no_grad():
        u2, mixed2, post2 = conn.width(x)
    torch.testing.assert_close(u2, u, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(post2, post, rtol=1e-6, atol=1e-6)
    assert torch.equal(mixed2, x)

    again = perturbed_connection(kind, n, C, mix_streams=False, recompute=True)
    branch = torch.nn.Linear(C, C).double()
    xs = torch.randn(2, 3, n, C, dtype=torch.float64, requires_grad=True)
    outs = [m.double()(xs, branch) for m in (conn, again)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
    mods = (conn, again)
    grads = [torch.autograd.grad(o.square().sum(), [xs, *m.parameters()]) for o, m in zip(outs, mods, strict=True)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_triton_backend_runs_the_width_in_pytorch_and_the_depth_kernel():
    pytest.importorskip("triton")
    from hyperconn import kernels

    if not kernels.interpreter_active():
        pytest.skip("needs TRITON_INTERPRET=1 (set by tests/conftest.py before triton is imported)")
    ref = perturbed_connection("shc", 4, C, mix_streams=False)
    fused = perturbed_connection("shc", 4, C, mix_streams=False, backend="triton")
    x = torch.randn(5, 4, C, requires_grad=True)
    branch = torch.nn.Linear(C, C)
    outs = [m(x, branch) for m in (ref, fused)]
    torch.testing.assert_close(outs[1], outs[0], rtol=2e-5, atol=2e-5)
    mods = (ref, fused)
    grads = [torch.autograd.grad(o.square().sum(), [x, *m.parameters()]) for o, m in zip(outs, mods, strict=True)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=5e-5, atol=5e-5)


def test_declared_exact_sums():
    """Which kinds may skip H_res at which end: exact unit column / row sums by construction."""
    declared = {
        k: (connection_class(k).guarantees("columns_sum_to_one"), connection_class(k).guarantees("rows_sum_to_one"))
        for k in ("hc", "mhc", "mhc_lite", "kromhc", "shc", "identity", "orthogonal")
    }
    assert declared == {
        "hc": (False, False),
        "mhc": (False, True),  # rows: the last Sinkhorn step; columns only to the Sinkhorn error
        "mhc_lite": (True, True),
        "kromhc": (True, True),
        "shc": (True, True),
        "identity": (True, True),  # no H_res at all: nothing to skip (the kind has no mix_streams option)
        "orthogonal": (False, False),  # a rotation need not fix the all-ones vector
    }


@pytest.mark.parametrize(("kind", "n"), [("mhc", 4), ("mhc_lite", 3), ("kromhc", 4), ("shc", 3), ("shc", 4)])
def test_declared_sums_hold_far_from_init(kind, n):
    conn = perturbed_connection(kind, n, C, scale=2.0).double()
    res = conn.mixing(torch.randn(64, n, C, dtype=torch.float64)).res
    cls = connection_class(kind)
    if cls.guarantees("rows_sum_to_one"):
        assert (res.sum(-1) - 1).abs().max() < 1e-13
    if cls.guarantees("columns_sum_to_one"):
        assert (res.sum(-2) - 1).abs().max() < 1e-13


@pytest.mark.parametrize("kind", ["hc", "residual"])
def test_kinds_without_the_option_refuse_it(kind):
    n = 1 if kind == "residual" else 4
    with pytest.raises(ValueError, match="unknown option.*mix_streams"):
        hyperconn.make_connection(kind, n, C, mix_streams=False)


def test_mix_streams_must_be_a_bool():
    with pytest.raises(ValueError, match="shc: mix_streams must be true or false, got 0"):
        hyperconn.make_connection("shc", 4, C, mix_streams=0)


@pytest.mark.parametrize(("kind", "n"), SKIPPABLE)
def test_width_is_one_gemm_on_pre_and_post_columns_only(kind, n):
    """Forward FLOPs of the skipping width step, counted by torch: the projection on the ``2 n``
    pre/post columns (``2 T (n C) (2 n)``) and ``u = H_pre x`` (``2 T n C``), nothing else; the
    mixing twin spends more (its residual columns and, at least, the ``n x n`` mix)."""
    from torch.utils.flop_counter import FlopCounterMode

    T = 6
    x = torch.randn(T, n, C)
    skip = hyperconn.make_connection(kind, n, C, 0, mix_streams=False)
    mixing = hyperconn.make_connection(kind, n, C, 0)
    counts = []
    for conn in (skip, mixing):
        with FlopCounterMode(display=False) as counter:
            conn.width_fast(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == 2 * T * (n * C) * (2 * n) + 2 * T * n * C
    assert counts[1] >= counts[0] + 2 * T * n * n * C
