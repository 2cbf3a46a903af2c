"""The recorder of connection calls: one Call per call, public API only, hooks always removed."""

from __future__ import annotations

import pytest
import torch
from tests.support import perturb
from torch import nn

import hyperconn
from hyperconn.diagnostics import MixingRecorder, mhc_logits
from hyperconn.linalg import sinkhorn_log

N, C = 4, 8


class TwoBlocks(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.conns = nn.ModuleList(hyperconn.make_connection(kind, N, C, layer_index=i) for i in range(2))
        self.branch = nn.Linear(C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conn in self.conns:
            x = conn(x, self.branch)
        return x


def streams(batch: int = 2, tokens: int = 5) -> torch.Tensor:
    return torch.randn(batch, tokens, N, C, generator=torch.Generator().manual_seed(0))


def perturbed(kind: str) -> TwoBlocks:
    model = TwoBlocks(kind)
    perturb(model, scale=0.3, seed=1)
    return model


@pytest.mark.parametrize("kind", ["hc", "mhc", "shc"])
def test_records_each_call_as_mixing_returns_it(kind):
    model = perturbed(kind)
    x = streams()
    with MixingRecorder(model) as rec:
        model(x)
    calls = rec.pop()
    assert [c.name for c in calls] == ["conns.0", "conns.1"]
    with torch.no_grad():
        expected = model.conns[0].mixing(x)
    first = calls[0]
    assert first.res.shape == (10, N, N) and first.pre.shape == (10, N) and first.res.dtype == torch.float64
    assert torch.allclose(first.res, expected.res.reshape(-1, N, N).double())
    assert torch.allclose(first.post, expected.post.reshape(-1, N).double())
    assert (first.logits is not None) == (kind == "mhc")
    if kind == "mhc":  # the logits are what Sinkhorn turns into H_res
        assert torch.allclose(sinkhorn_log(first.logits, model.conns[0].sinkhorn_iters), first.res, atol=1e-6)
    assert rec.pop() == []


def test_max_tokens_and_without_logits():
    model = perturbed("mhc")
    x = streams()
    with MixingRecorder(model, max_tokens=3, with_logits=False) as rec:
        model(x)
    calls = rec.pop()
    assert all(c.res.shape == (3, N, N) and c.logits is None for c in calls)
    with torch.no_grad():
        full = model.conns[0].mixing(x).res.reshape(-1, N, N)
    assert torch.allclose(calls[0].res, full[:3].double())
    with MixingRecorder(model, max_tokens=3) as rec:
        model(x)
    logits = rec.pop()[0].logits
    assert torch.allclose(logits, mhc_logits(model.conns[0], x).reshape(-1, N, N)[:3].double())


def test_hooks_removed_even_when_the_block_raises_and_grad_flows():
    model = perturbed("shc")
    with pytest.raises(RuntimeError, match="boom"), MixingRecorder(model) as rec:
        model(streams()).sum().backward()
        assert len(rec.calls) == 2
        raise RuntimeError("boom")
    assert all(p.grad is not None for p in model.parameters())
    model(streams())
    assert len(rec.calls) == 2  # nothing recorded after exit


def test_bad_input():
    with pytest.raises(ValueError, match="contains no HyperConnection"):
        MixingRecorder(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="max_tokens must be None or an integer >= 1, got 0"):
        MixingRecorder(TwoBlocks("shc"), max_tokens=0)
