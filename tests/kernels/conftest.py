"""Run the Triton kernels under Triton's CPU interpreter, with small blocks.

The interpreter (Triton 3.x) casts float32 to bfloat16 by truncating the mantissa, where a GPU
rounds to nearest even; the fixture makes the interpreter round to nearest (through torch) so
the bfloat16 comparisons test the kernels, not that difference.

Triton decides between compiling and interpreting when a function is decorated, and its own
``tl.sum`` & co. are decorated when ``triton`` is first imported, so ``TRITON_INTERPRET=1`` is
set by the root ``tests/conftest.py``, before anything imports Triton. Small blocks make the
test shapes span several blocks with ragged ends.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

_INTERPRETER_SET_FIRST = os.environ.get("TRITON_INTERPRET") == "1" or "triton" not in sys.modules


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    pytest.importorskip("triton")
    if not _INTERPRETER_SET_FIRST:
        pytest.fail("triton was imported before TRITON_INTERPRET=1 was set (tests/conftest.py sets it first)")
    _round_bfloat16_to_nearest(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from hyperconn.kernels import fused_width

    monkeypatch.setattr(fused_width, "BLOCK_T", 16)
    monkeypatch.setattr(fused_width, "BLOCK_K", 32)
    monkeypatch.setattr(fused_width, "BLOCK_R", 32)


def _round_bfloat16_to_nearest(monkeypatch) -> None:
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    truncating = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32)).to(torch.bfloat16)
            return interpreter.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return truncating(self, src, dst_type)

    monkeypatch.setattr(builder, "cast_impl", cast_impl)
