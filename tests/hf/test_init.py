"""The function-preserving init of one connection, kind by kind."""

from __future__ import annotations

import math

import pytest
import torch

import hyperconn
from hyperconn.hf import preservation_error, preserve_function_, preserving_pre

from .helpers import KIND_STREAMS


@pytest.mark.parametrize(("kind", "streams"), KIND_STREAMS)
@pytest.mark.parametrize("layer_index", [0, 5])
def test_preserving_conditions_hold_after_the_init(kind, streams, layer_index):
    conn = preserve_function_(hyperconn.make_connection(kind, streams, 16, layer_index))
    assert preservation_error(conn) < 1e-6
    # and the connection then computes x + F(x) in every stream on identical streams
    x = torch.randn(5, 16)
    branch = torch.nn.Linear(16, 16)
    out = conn(hyperconn.expand_streams(x, streams), branch)
    expected = (x + branch(x)).unsqueeze(-2).expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("kind", "streams"), [(k, n) for k, n in KIND_STREAMS if k not in ("residual", "hc")])
def test_the_paper_init_violates_the_conditions(kind, streams):
    """sum H_pre ~ 1.5 and H_post = 2 sigmoid(+-1) != 1 for every coefficient kind."""
    assert preservation_error(hyperconn.make_connection(kind, streams, 16, 0)) > 0.2


def test_the_init_overrides_trained_values():
    """Whatever the connection holds (dynamic projections included), the init restores the conditions."""
    conn = hyperconn.make_connection("shc", 4, 16, 2)
    hc = hyperconn.make_connection("hc", 4, 16, 2)
    with torch.no_grad():
        for param in [*conn.parameters(), *hc.parameters()]:
            param.add_(torch.randn_like(param))
    assert preservation_error(conn) > 1e-2 and preservation_error(hc) > 1e-2
    assert preservation_error(preserve_function_(conn)) < 1e-6
    assert preservation_error(preserve_function_(hc)) < 1e-6


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_preserving_pre_sums_to_one_and_favours_one_stream(n):
    for layer_index in range(2 * n):
        pre = preserving_pre(n, layer_index)
        assert pre.sum().item() == pytest.approx(1.0, abs=1e-12)
        favoured = layer_index % n
        others = [pre[i].item() for i in range(n) if i != favoured]
        assert all(v == pytest.approx(pre[favoured].item() / math.e) for v in others)


@pytest.mark.parametrize("kind", ["shc", "mhc"])
def test_static_coefficients_read_back(kind):
    """The written biases mean what the docs say: H_pre = preserving_pre, H_post = 1, and the
    residual matrix is the kind's own static value."""
    fresh = hyperconn.make_connection(kind, 4, 8, 1)
    conn = preserve_function_(hyperconn.make_connection(kind, 4, 8, 1))
    streams = torch.randn(2, 4, 8)
    pre, res, post = conn.mixing(streams)
    torch.testing.assert_close(pre, preserving_pre(4, 1).float().expand(2, 4))
    torch.testing.assert_close(post, torch.ones(2, 4))
    torch.testing.assert_close(res, fresh.mixing(streams).res)


def test_an_unknown_connection_class_is_refused():
    class Custom(hyperconn.HyperConnection):
        kind = "custom"

    with pytest.raises(TypeError, match="Custom"):
        preserve_function_(Custom(2, 4))
