"""Under bf16 autocast, float32 streams give the float32 result (mixing, depth and their backward).

The branch is an elementwise function (autocast leaves it in float32), so any difference between
the two runs is the connection's own rounding. Before the fix the mixing GEMM ran in bf16 under
autocast: relative errors ~3e-3 for every kind but residual.
"""

from __future__ import annotations

import pytest
import torch
from tests.support import perturbed_connection

from .helpers import CASES

DIM = 24
TOL = 1e-5


def branch(u: torch.Tensor) -> torch.Tensor:
    """Elementwise, computed in float32 whatever ``u``'s dtype, returned in ``u``'s dtype."""
    return (torch.tanh(u.float()) * 1.5 + 0.25).to(u.dtype)


def run(conn, streams, autocast: bool):
    conn.zero_grad(set_to_none=True)
    x = streams.clone().requires_grad_()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        out = conn(x, branch)
    grad_out = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    out.backward(grad_out)
    grads = {name: p.grad.clone() for name, p in conn.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.clone(), grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("kind,n", CASES)
@pytest.mark.parametrize("recompute", [False, True])
def test_float32_streams_exact_under_bf16_autocast(kind, n, recompute):
    conn = perturbed_connection(kind, n, DIM, scale=0.3, recompute=recompute)
    streams = torch.randn(3, 5, n, DIM)
    out_ref, dx_ref, grads_ref = run(conn, streams, autocast=False)
    out, dx, grads = run(conn, streams, autocast=True)
    assert out.dtype == torch.float32 and dx.dtype == torch.float32
    assert rel(out, out_ref) <= TOL
    assert rel(dx, dx_ref) <= TOL
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads[name].dtype == torch.float32, name
        assert rel(grads[name], grads_ref[name]) <= TOL, name


@pytest.mark.parametrize("kind,n", [("shc", 4), ("mhc", 4), ("hc", 3)])
def test_bf16_streams_stay_bf16_with_float32_accumulation(kind, n):
    """bf16 streams: outputs and stream gradients in bf16, equal to the float32 computation on the
    same (bf16-representable) inputs rounded once at the end."""
    conn = perturbed_connection(kind, n, DIM, scale=0.3)
    streams = torch.randn(4, n, DIM).bfloat16().float()
    out32, dx32, _ = run(conn, streams, autocast=False)
    x = streams.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conn(x, branch)
    assert out.dtype == torch.bfloat16
    # one bf16 rounding of the float32 result (plus the bf16 branch output): well under 1e-2
    assert rel(out.float(), out32) < 1e-2
