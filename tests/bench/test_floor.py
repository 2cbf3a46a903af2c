"""The step floor's counting (hyperconn.bench.floor) against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hyperconn.bench.floor import Cost, connection_ops, measure_copy_bandwidth, measure_gemm_rate, model_step_cost
from hyperconn.connections import make_connection

# T = 2 tokens, n = 2 streams, C = 3, float32 (b = 4): n C = 6 features, stream = T n C = 12, T C = 6
T, N, C, B = 2, 2, 3, 4


def mhc(mix: bool = True):
    return make_connection("mhc", N, C, 0, mix_streams=mix)


def test_mixing_connection_by_hand():
    # K = 2 + 2 + n^2 = 8 columns; parameters 6 (gain) + 48 (proj) + 3 (gates) + 8 (bias) = 65
    ops = connection_ops(mhc(), T, B)
    assert ops["projection"] == Cost(6 * 2 * 6 * 8 + 2 * 2 * 6, 4 * 12 * 4)  # 600 flops, 192 bytes
    assert ops["width"] == Cost(6 * 12 + 6 * 12 * 2, (2 * 12 + 6) * 4 + (3 * 12 + 6) * 4)  # 216, 288
    assert ops["depth"] == Cost(72, (2 * 12 + 6) * 4 + (12 + 2 * 6) * 4)  # 72, 216
    assert ops["optimizer"] == Cost(0, 32 * 65)


def test_skipping_connection_is_cheaper_by_hand():
    # K = 4 (pre and post only); parameters 6 + 24 + 2 + 4 = 36; width is u = H_pre x alone
    ops = connection_ops(mhc(mix=False), T, B)
    assert ops["projection"] == Cost(6 * 2 * 6 * 4 + 24, 192)
    assert ops["width"] == Cost(72, (12 + 6) * 4 + (3 * 12 + 6) * 4)  # 72 flops, 240 bytes
    assert ops["optimizer"] == Cost(0, 32 * 36)
    assert sum(ops.values(), Cost()) == Cost(456, 1800)


class TwoConnections(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = mhc(), mhc(mix=False)

    def connections(self):
        return [self.a, self.b]


def test_model_extra_saved_and_floor_by_hand():
    cost = model_step_cost(TwoConnections(), T, B, copy_bytes_per_s=1.0, gemm_flops_per_s=1.0)
    # per connection minus residual (2 T C = 12 flops, 6 T C b = 144 bytes), plus the ends
    # (2 T n C = 24 flops, 4 T (n + 1) C b = 288 bytes)
    assert cost.extra == Cost((888 - 12) + (456 - 12) + 24, (2776 - 144) + (1800 - 144) + 288)
    assert (cost.connections, cost.skipped) == (2, 1)
    assert cost.saved == Cost(888 - 456, 2776 - 1800)  # the n x n mix, 4 columns, 29 parameters
    # at 1 byte/s and 1 flop/s every op's floor is max(flops, bytes):
    # mixing 600 + 288 + 216 + 2080, skipping 312 + 240 + 216 + 1152, residual 144 each, ends 288
    assert cost.floor_s == pytest.approx((3184 - 144) + (1920 - 144) + 288)


@pytest.mark.parametrize("kind", ["mhc", "hc"])  # their coefficient math has no GEMM
def test_projection_flops_match_the_flop_counter(kind):
    conn = make_connection(kind, 4, 8)
    x = torch.randn(5, 4, 8)
    with FlopCounterMode(display=False) as counter:
        conn.mixing(x)
    fwd_gemm = connection_ops(conn, 5, 4)["projection"].flops / 3 - 2 * 5 * 4 * 8 / 3
    assert counter.get_total_flops() == pytest.approx(fwd_gemm)


def test_rates_are_positive_and_finite():
    bw, rate = measure_copy_bandwidth(copy_mib=4, repeats=2), measure_gemm_rate((64, 64, 8), repeats=2)
    assert 0 < bw < float("inf") and 0 < rate < float("inf")
