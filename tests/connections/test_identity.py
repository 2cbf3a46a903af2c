"""The identity kind: H_res = I exactly, no H_res parameters, mHC's H_pre / H_post."""

import torch
from tests.support import perturbed_connection

import hyperconn
from hyperconn.connections.reference import naive_forward


def _branch(u):
    return torch.tanh(u) * 1.5 + 0.1


def test_identity_has_no_res_parameters_and_mhcs_pre_post_groups():
    conn = hyperconn.make_connection("identity", 4, 16, layer_index=2)
    mhc = hyperconn.make_connection("mhc", 4, 16, layer_index=2)
    assert conn.group_sizes == (4, 4)
    assert not conn.mixes_streams
    assert sum(p.numel() for p in conn.parameters()) == 4 * 16 + 4 * 16 * 8 + 2 + 8
    torch.testing.assert_close(conn.bias, mhc.bias[:8])  # +1 at stream layer_index mod n, -1 elsewhere
    assert "mix_streams" not in repr(conn)


def test_identity_is_the_naive_formula_with_streams_passing_through():
    conn = perturbed_connection("identity", 4, 12, scale=0.5, seed=3).double()
    x = torch.randn(2, 5, 4, 12, dtype=torch.float64)
    res = conn.mixing(x).res
    assert torch.equal(res, torch.eye(4, dtype=torch.float64).expand_as(res))
    torch.testing.assert_close(conn(x, _branch), naive_forward(conn, x, _branch), rtol=1e-12, atol=1e-12)
    u, mixed, post = conn.width(x)
    assert torch.equal(mixed, x)  # no H_res computed: the streams themselves


def test_identity_pre_post_equal_mhc_with_the_same_parameters():
    mhc = perturbed_connection("mhc", 3, 8, scale=0.4, seed=1, mix_streams=False).double()
    ident = hyperconn.make_connection("identity", 3, 8, layer_index=1).double()
    ident.load_state_dict(mhc.state_dict())
    x = torch.randn(7, 3, 8, dtype=torch.float64)
    for a, b in zip(ident.mixing(x), mhc.mixing(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradcheck_float64():
    conn = perturbed_connection("identity", 3, 5, scale=0.5, seed=2).double()
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    params = list(conn.parameters())

    def f(x, *ps):
        state = dict(zip([n for n, _ in conn.named_parameters()], ps, strict=True))
        return torch.func.functional_call(conn, state, (x, _branch))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_(True) for p in params]))
