"""Connections as ordinary modules: deferred (meta) init, dtype/device moves, functional_call,
state_dict round trips. Exact constants are not module state, so none of these can corrupt them."""

from __future__ import annotations

import math

import pytest
import torch
from tests.support import perturbed_connection
from torch.func import functional_call

import hyperconn

from .helpers import CASES

DIM = 16


def state(conn):
    return {k: v.clone() for k, v in conn.state_dict().items()}


@pytest.mark.parametrize("kind,n", CASES)
def test_meta_build_to_empty_reset_equals_fresh(kind, n):
    fresh = hyperconn.make_connection(kind, n, DIM, layer_index=2)
    with torch.device("meta"):
        deferred = hyperconn.make_connection(kind, n, DIM, layer_index=2)
    assert all(p.is_meta for p in deferred.parameters())
    deferred.to_empty(device="cpu")
    deferred.reset_parameters()
    assert state(deferred).keys() == state(fresh).keys()
    for k, v in state(fresh).items():
        assert torch.equal(deferred.state_dict()[k], v), k
    x = torch.randn(3, n, DIM)
    for a, b in zip(deferred.mixing(x), fresh.mixing(x), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_shc_reset_after_to_empty_gives_exact_initial_h_res(n):
    with torch.device("meta"):
        conn = hyperconn.make_connection("shc", n, DIM)
    conn.to_empty(device="cpu")
    conn.reset_parameters()
    res = conn.double().mixing(torch.randn(2, n, DIM, dtype=torch.float64)).res
    j = torch.full((n, n), 1 / n, dtype=torch.float64)
    expected = j + math.tanh(4.0) * (torch.eye(n, dtype=torch.float64) - j)
    torch.testing.assert_close(res, expected.expand_as(res), atol=1e-15, rtol=0)


@pytest.mark.parametrize("kind,n", CASES)
def test_reset_parameters_undoes_training(kind, n):
    conn = perturbed_connection(kind, n, DIM)
    conn.reset_parameters()
    fresh = hyperconn.make_connection(kind, n, DIM, layer_index=1)
    for k, v in fresh.state_dict().items():
        assert torch.equal(conn.state_dict()[k], v), k


@pytest.mark.parametrize("kind,n", [("shc", 4), ("mhc_lite", 3), ("mhc", 4), ("kromhc", 4)])
def test_bfloat16_module_keeps_exact_constants(kind, n):
    """``module.bfloat16()`` rounds parameters, never the exact constants: with float64 parameters
    copied from the rounded ones, float64 math reproduces the same matrices to float64 accuracy."""
    conn = perturbed_connection(kind, n, DIM).bfloat16()
    twin = hyperconn.make_connection(kind, n, DIM, layer_index=1).double()
    twin.load_state_dict({k: v.double() for k, v in conn.state_dict().items()})
    x = torch.randn(3, n, DIM, dtype=torch.float64)
    res = conn.double().mixing(x).res  # round trip back to float64: parameters stay the rounded values
    torch.testing.assert_close(res, twin.mixing(x).res, atol=1e-14, rtol=0)
    if kind in ("mhc_lite", "kromhc", "shc"):
        ones = torch.ones(res.shape[:-1], dtype=torch.float64)
        torch.testing.assert_close(res.sum(-1), ones, atol=1e-12, rtol=0)  # exact constants => exact sums


@pytest.mark.parametrize("kind,n", CASES)
def test_functional_call_uses_the_given_parameters(kind, n):
    conn = perturbed_connection(kind, n, DIM)
    other = perturbed_connection(kind, n, DIM, seed=7)
    x = torch.randn(2, n, DIM)
    params = dict(other.named_parameters())
    got = functional_call(conn, params, (x, torch.tanh))
    torch.testing.assert_close(got, other(x, torch.tanh), atol=0, rtol=0)


@pytest.mark.parametrize("kind,n", CASES)
def test_state_dict_round_trip(kind, n):
    conn = perturbed_connection(kind, n, DIM)
    copy = hyperconn.make_connection(kind, n, DIM, layer_index=1)
    copy.load_state_dict(conn.state_dict())
    x = torch.randn(2, n, DIM)
    assert torch.equal(copy(x, torch.tanh), conn(x, torch.tanh))
    # only parameters are saved: no constants, no derived buffers
    assert set(conn.state_dict()) == {name for name, _ in conn.named_parameters()}


def test_to_float64_and_back():
    conn = perturbed_connection("shc", 4, DIM)
    x = torch.randn(2, 4, DIM)
    ref = conn(x, torch.tanh)
    conn.double()
    assert all(p.dtype == torch.float64 for p in conn.parameters())
    conn.float()
    torch.testing.assert_close(conn(x, torch.tanh), ref, atol=0, rtol=0)


@pytest.mark.parametrize("kind,n", [("shc", 2), ("shc", 3), ("hc", 2), ("mhc", 2), ("kromhc", 2), ("mhc_lite", 2)])
def test_every_parameter_gets_a_gradient(kind, n):
    """DDP without find_unused_parameters needs a gradient for every parameter (sHC n = 2 had an
    unused gamma)."""
    conn = perturbed_connection(kind, n, DIM)
    conn(torch.randn(3, n, DIM), torch.tanh).square().sum().backward()
    missing = [name for name, p in conn.named_parameters() if p.grad is None]
    assert not missing


def test_every_parameter_has_a_dim_zero_for_fsdp():
    """FSDP2 shards along dim 0 and refuses 0-d parameters."""
    for kind, n in CASES:
        conn = hyperconn.make_connection(kind, n, DIM)
        assert all(p.dim() >= 1 for p in conn.parameters()), kind


def test_hc_loads_a_checkpoint_with_scalar_gates():
    conn = perturbed_connection("hc", 3, DIM)
    old = {k: (v.reshape(()) if k.endswith("_gate") else v) for k, v in conn.state_dict().items()}
    copy = hyperconn.make_connection("hc", 3, DIM, layer_index=1)
    copy.load_state_dict(old)
    x = torch.randn(2, 3, DIM)
    assert torch.equal(copy(x, torch.tanh), conn(x, torch.tanh))
