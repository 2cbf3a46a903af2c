"""The code in docs/use-in-your-model.md runs: the own-block snippets, and the preserving recipe
for such a block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import hyperconn
import hyperconn.hf

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "use-in-your-model.md"


def own_block_snippets() -> list[str]:
    text = GUIDE.read_text()
    section = text[text.index("## 3. Your own block") :]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_guide_has_both_block_snippets():
    snippets = own_block_snippets()
    assert len(snippets) == 2
    assert "class Block" in snippets[0] and "class TransformerBlock" in snippets[1]


@pytest.mark.parametrize("index", [0, 1])
def test_block_snippet_runs(index):
    namespace: dict = {}
    exec(compile(own_block_snippets()[index], f"{GUIDE.name}[{index}]", "exec"), namespace)
    out = namespace["out"]
    assert out.shape == (2, 8, 64) and torch.isfinite(out).all()


def test_the_preserving_recipe_for_an_own_block():
    """preserve_function_ on every connection + mean reduce = the plain residual block."""
    namespace: dict = {}
    exec(compile(own_block_snippets()[1], "snippet", "exec"), namespace)
    block = namespace["TransformerBlock"](64, layer_id=3, kind="shc", streams=4)
    h = torch.randn(2, 8, 64)
    for conn in (block.attn_conn, block.ffn_conn):
        hyperconn.hf.preserve_function_(conn)
    out = block(hyperconn.expand_streams(h, 4)).mean(dim=-2)
    h1 = h + block.attention(block.attention_norm(h))
    expected = h1 + block.feed_forward(block.ffn_norm(h1))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
