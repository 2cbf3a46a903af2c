"""compile_blocks: every block compiled in place, same values and gradients as eager."""

from __future__ import annotations

import pytest
import torch
from tests.support import TINY

from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig
from hyperconn.model.compile import compile_blocks


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    cfg = ModelConfig(**{**TINY, "mlp_dim": 32}, connection=ConnectionConfig("shc"))
    torch.manual_seed(0)
    eager = LanguageModel(cfg)
    compiled = LanguageModel(cfg)
    compiled.load_state_dict(eager.state_dict())
    # aot_eager: the wiring (every block compiled, options passed through, forward and backward
    # traced) without Inductor's minutes of C++ code generation on a CPU test machine
    assert compile_blocks(compiled, backend="aot_eager") is compiled
    assert list(compiled.state_dict()) == list(eager.state_dict())
    idx = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
    want, got = eager(idx), compiled(idx)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    want.square().mean().backward()
    got.square().mean().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_refuses_other_modules():
    with pytest.raises(ValueError, match="compile_blocks needs a hyperconn LanguageModel, got Linear"):
        compile_blocks(torch.nn.Linear(2, 2))
