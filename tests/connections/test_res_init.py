"""``res_init="uniform"`` for the Birkhoff kinds: H_res starts at J = 11^T / n exactly."""

from __future__ import annotations

import pytest
import torch

import hyperconn
from hyperconn.connections import connection_option_defaults, connection_options

C = 8
CASES = [("mhc", 2), ("mhc", 3), ("mhc", 4), ("mhc", 8), ("mhc_lite", 2), ("mhc_lite", 3), ("mhc_lite", 4),
         ("kromhc", 2), ("kromhc", 4), ("kromhc", 8)]  # fmt: skip


@pytest.mark.parametrize(("kind", "n"), CASES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_uniform_init_is_j(kind, n, dtype, tol):
    conn = hyperconn.make_connection(kind, n, C, layer_index=1, res_init="uniform").to(dtype)
    x = torch.randn(7, n, C, dtype=dtype)
    res = conn.mixing(x).res
    assert (res - 1.0 / n).abs().max() <= tol
    with torch.no_grad():  # the cached decode path builds the same matrix
        mat, _ = conn.inference_width_matrix(x)
    assert (mat[:, 1:] - 1.0 / n).abs().max() <= tol


@pytest.mark.parametrize(("kind", "n"), CASES)
def test_identity_init_is_unchanged_and_near_i(kind, n):
    default = hyperconn.make_connection(kind, n, C)
    explicit = hyperconn.make_connection(kind, n, C, res_init="identity")
    for (name, a), b in zip(default.state_dict().items(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    res = default.mixing(torch.randn(3, n, C, dtype=torch.float64).float()).res
    assert (res - torch.eye(n)).abs().max() < 1e-2


@pytest.mark.parametrize("kind", ["mhc", "mhc_lite", "kromhc"])
def test_reset_parameters_restores_the_uniform_init(kind):
    conn = hyperconn.make_connection(kind, 4, C, res_init="uniform")
    want = {k: v.clone() for k, v in conn.state_dict().items()}
    with torch.no_grad():
        for p in conn.parameters():
            p.add_(1.0)
    conn.reset_parameters()
    for name, value in conn.state_dict().items():
        assert torch.equal(value, want[name]), name


@pytest.mark.parametrize("kind", ["mhc", "mhc_lite", "kromhc"])
def test_uniform_init_still_learns(kind):
    """At J the residual coefficients get a gradient (the softmax / Sinkhorn are not saturated)."""
    conn = hyperconn.make_connection(kind, 4, C, res_init="uniform").double()
    x = torch.randn(5, 4, C, dtype=torch.float64)
    out = conn(x, torch.tanh)
    out.pow(3).sum().backward()
    n = 4
    assert conn.bias.grad[2 * n :].abs().max() > 1e-6


def test_option_is_listed_with_its_default_and_validated():
    for kind in ("mhc", "mhc_lite", "kromhc"):
        assert "res_init" in connection_options(kind)
        assert connection_option_defaults(kind)["res_init"] == "identity"
    for kind in ("hc", "shc", "residual"):
        assert "res_init" not in connection_options(kind)
    with pytest.raises(ValueError, match="mhc: res_init must be one of identity, uniform, got 'flat'"):
        hyperconn.make_connection("mhc", 4, C, res_init="flat")
    with pytest.raises(ValueError, match="unknown option"):
        hyperconn.make_connection("shc", 4, C, res_init="uniform")
