"""Exact initial mixing of every kind (W = 0, so the coefficients are the static biases)."""

import math

import pytest
import torch

import hyperconn

DIM = 8


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def expected_pre_post(n, layer_index):
    hot = layer_index % n
    pre = torch.tensor([sigmoid(1.0) if i == hot else sigmoid(-1.0) for i in range(n)])
    return pre, 2 * pre


def initial(kind, n, layer_index):
    conn = hyperconn.make_connection(kind, n, DIM, layer_index=layer_index)
    return conn.mixing(torch.randn(3, n, DIM))


@pytest.mark.parametrize("n,layer_index", [(2, 0), (4, 1), (4, 6), (8, 3)])
def test_shc_initial_values(n, layer_index):
    pre, res, post = initial("shc", n, layer_index)
    j = torch.full((n, n), 1 / n)
    expected_res = j + math.tanh(4.0) * (torch.eye(n) - j)
    torch.testing.assert_close(res, expected_res.expand(3, n, n), atol=1e-6, rtol=0)
    e_pre, e_post = expected_pre_post(n, layer_index)
    torch.testing.assert_close(pre, e_pre.expand(3, n))
    torch.testing.assert_close(post, e_post.expand(3, n))


def test_shc_sigma_bias_option():
    n = 3
    _, res, _ = hyperconn.make_connection("shc", n, DIM, sigma_bias=1.5).mixing(torch.randn(2, n, DIM))
    j = torch.full((n, n), 1 / n)
    torch.testing.assert_close(res[0], j + math.tanh(1.5) * (torch.eye(n) - j), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [2, 4])
def test_mhc_initial_values(n):
    pre, res, post = initial("mhc", n, 0)
    logits = -8.0 * (1 - torch.eye(n, dtype=torch.float64))
    for _ in range(20):
        logits = logits - torch.logsumexp(logits, dim=-2, keepdim=True)
        logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    torch.testing.assert_close(res[0], logits.exp().float())
    # at init the Sinkhorn of this symmetric matrix is exact: diag = 1 / (1 + (n-1) e^-8)
    diag = 1 / (1 + (n - 1) * math.exp(-8))
    assert res[0, 0, 0].item() == pytest.approx(diag, rel=1e-6)
    e_pre, e_post = expected_pre_post(n, 0)
    torch.testing.assert_close(pre[0], e_pre)
    torch.testing.assert_close(post[0], e_post)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mhc_lite_initial_values(n):
    _, res, _ = initial("mhc_lite", n, 0)
    count = math.factorial(n)
    weight_identity = 1 / (1 + (count - 1) * math.exp(-8))
    weight_other = math.exp(-8) * weight_identity
    # (n-1)! permutations map i -> j for i != j; (n-1)! - 1 non-identity ones fix i
    off = math.factorial(n - 1) * weight_other
    diag = weight_identity + (math.factorial(n - 1) - 1) * weight_other
    expected = torch.full((n, n), off, dtype=torch.float64)
    expected.fill_diagonal_(diag)
    torch.testing.assert_close(res[0], expected.float())


@pytest.mark.parametrize("n", [2, 4, 8])
def test_kromhc_initial_values(n):
    _, res, _ = initial("kromhc", n, 0)
    p = 1 / (1 + math.exp(-8))
    factor = torch.tensor([[p, 1 - p], [1 - p, p]], dtype=torch.float64)
    expected = factor
    for _ in range(int(math.log2(n)) - 1):
        expected = torch.kron(expected, factor)
    torch.testing.assert_close(res[0], expected.float())


@pytest.mark.parametrize("n,layer_index", [(2, 0), (4, 5)])
def test_hc_initial_values(n, layer_index):
    pre, res, post = initial("hc", n, layer_index)
    e_pre = torch.zeros(n)
    e_pre[layer_index % n] = 1
    torch.testing.assert_close(pre[0], e_pre)
    torch.testing.assert_close(res[0], torch.eye(n))
    torch.testing.assert_close(post[0], torch.ones(n))


def test_residual_is_identity():
    pre, res, post = initial("residual", 1, 0)
    assert pre.shape == (3, 1) and res.shape == (3, 1, 1) and post.shape == (3, 1)
    assert torch.all(pre == 1) and torch.all(res == 1) and torch.all(post == 1)
    conn = hyperconn.make_connection("residual", 1, DIM)
    x = torch.randn(3, 1, DIM)
    torch.testing.assert_close(conn(x, torch.tanh), x + torch.tanh(x))
