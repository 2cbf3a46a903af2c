"""Frac-connections (hyperconn.connections.frac): the equations against a naive per-fraction
reference in float64 (forward and every gradient), the paper's init, the checks."""

import pytest
import torch

from hyperconn.connections import FracConnection, make_connection
from hyperconn.connections.frac import merge_fracs, split_fracs

KINDS = ("hc", "mhc", "shc")


def _perturbed(kind: str, m: int = 4, dim: int = 24, layer_index: int = 1) -> FracConnection:
    torch.manual_seed(0)
    conn = make_connection(kind, 1, dim, layer_index, num_fracs=m).double()
    with torch.no_grad():  # move every parameter off its init so the dynamic parts are not zero
        for p in conn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return conn


def _branch(dim: int):
    w = torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / dim**0.5
    return lambda u: torch.tanh(u @ w)


def _naive(conn: FracConnection, x: torch.Tensor, branch) -> torch.Tensor:
    """The equations of the module docstring, fraction by fraction, from the kind's own mixing."""
    m = conn.num_fracs
    pre, res, post = conn.inner.mixing(x)
    pre = pre + conn.pre_shift.double()
    post = post + conn.post_shift.double()
    u = torch.cat([pre[..., k : k + 1] * x[..., k, :] for k in range(m)], dim=-1)
    f = branch(u)
    w = conn.frac_dim
    out = []
    for j in range(m):
        mixed_j = sum(res[..., i, j : j + 1] * x[..., i, :] for i in range(m))
        out.append(mixed_j + post[..., j : j + 1] * f[..., j * w : (j + 1) * w])
    return torch.stack(out, dim=-2)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_gradients_match_the_naive_reference(kind):
    conn = _perturbed(kind)
    branch = _branch(conn.dim)
    x = torch.randn(2, 3, conn.num_fracs, conn.frac_dim, dtype=torch.float64, requires_grad=True)
    got = conn(x, branch)
    want = _naive(conn, x, branch)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    params = [x, *conn.parameters()]
    grads_got = torch.autograd.grad(got, params, g)
    grads_want = torch.autograd.grad(want, params, g)
    for name, a, b in zip(["x", *(n for n, _ in conn.named_parameters())], grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{kind}: grad {name}")
        assert a.abs().sum() > 0, f"{kind}: {name} receives no gradient"  # every parameter learns (DDP-safe)


@pytest.mark.parametrize("kind", KINDS)
def test_every_fraction_has_weight_one_at_init(kind):
    conn = make_connection(kind, 1, 32, 3, num_fracs=4)
    x = torch.randn(5, 4, 8)
    pre, res, post = conn.mixing(x)
    torch.testing.assert_close(pre, torch.ones(5, 4))
    torch.testing.assert_close(post, torch.ones(5, 4))
    assert res.shape == (5, 4, 4)


def test_hc_starts_as_the_residual_connection():
    """hc: H_res = I exactly at init, so h' = h + F(h) (the paper's init: gamma = I, beta = 1)."""
    conn = make_connection("hc", 1, 32, 0, num_fracs=4).double()
    branch = _branch(32)
    h = torch.randn(3, 7, 32, dtype=torch.float64)
    out = merge_fracs(conn(split_fracs(h, 4), branch))
    torch.testing.assert_close(out, h + branch(h), rtol=1e-14, atol=1e-14)


def test_the_stream_stays_the_hidden_width():
    """No widening: what comes in and goes out is (..., m, C/m), the bytes of (..., C)."""
    conn = make_connection("shc", 1, 64, 0, num_fracs=4)
    h = torch.randn(2, 5, 64)
    out = conn(split_fracs(h, 4), lambda u: u)
    assert out.shape == (2, 5, 4, 16)
    assert out.numel() * out.element_size() == h.numel() * h.element_size()
    wide = make_connection("shc", 4, 64, 0)(h.unsqueeze(-2).expand(2, 5, 4, 64).contiguous(), lambda u: u)
    assert wide.numel() == 4 * h.numel()


def test_split_and_merge_are_views():
    h = torch.randn(2, 3, 12)
    x = split_fracs(h, 3)
    assert x.shape == (2, 3, 3, 4) and x.data_ptr() == h.data_ptr()
    assert merge_fracs(x).data_ptr() == h.data_ptr()
    torch.testing.assert_close(merge_fracs(x), h)


def test_recompute_gives_the_same_values_and_gradients():
    torch.manual_seed(0)
    plain = make_connection("shc", 1, 16, 0, num_fracs=2)
    again = make_connection("shc", 1, 16, 0, num_fracs=2, recompute=True)
    again.load_state_dict(plain.state_dict())
    x = torch.randn(3, 2, 8, requires_grad=True)
    a, b = plain(x, torch.sin), again(x, torch.sin)
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.sum(), [x, *plain.parameters()])
    gb = torch.autograd.grad(b.sum(), [x, *again.parameters()])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v)


def test_reset_parameters_after_a_meta_build_equals_a_plain_build():
    plain = make_connection("mhc", 1, 16, 2, num_fracs=4)
    with torch.device("meta"):
        meta = make_connection("mhc", 1, 16, 2, num_fracs=4)
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    x = torch.randn(3, 4, 4)
    for a, b in zip(plain.mixing(x), meta.mixing(x), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by num_fracs=4"):
        make_connection("shc", 1, 30, 0, num_fracs=4)
    with pytest.raises(ValueError, match=r"num_fracs=4 .*num_streams must be 1, got 4"):
        make_connection("shc", 4, 32, 0, num_fracs=4)
    with pytest.raises(ValueError, match=r"residual: num_fracs needs a hyper-connection kind"):
        make_connection("residual", 1, 32, 0, num_fracs=4)
    with pytest.raises(ValueError, match=r"num_fracs must be an integer >= 2, got 0"):
        make_connection("hc", 1, 32, 0, num_fracs=0)
    with pytest.raises(ValueError, match=r"kromhc: num_streams must be a power of two|kromhc"):
        make_connection("kromhc", 1, 30, 0, num_fracs=3)
    conn = make_connection("hc", 1, 32, 0, num_fracs=4)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 8\), got \(2, 32\)"):
        conn(torch.randn(2, 32), torch.sin)
    with pytest.raises(ValueError, match=r"the branch must return \(\.\.\., 32\)"):
        conn(torch.randn(2, 4, 8), lambda u: u[..., :8])
