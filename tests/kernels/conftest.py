"""Run the Triton kernels under Triton's CPU interpreter, with small blocks.

The interpreter (Triton 3.x) casts float32 to bfloat16 by truncating the mantissa, where a GPU
rounds to nearest even; the fixture makes the interpreter round to nearest (through torch) so
the bfloat16 comparisons test the kernels, not that difference.

Triton decides between compiling and interpreting when a function is decorated, and its own
``tl.sum`` & co. are decorated when ``triton`` is first imported, so ``TRITON_INTERPRET=1`` is
set here, at collection, before any test imports Triton (nothing else in the suite imports it at
collection; on CPU the rest of the suite never launches a Triton kernel, so the variable does not
affect it). Small blocks make the test shapes span several blocks with ragged ends.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

_TRITON_ALREADY_IMPORTED = "triton" in sys.modules
os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    pytest.importorskip("triton")
    if _TRITON_ALREADY_IMPORTED:
        pytest.fail("triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1; "
                    "run `pytest tests/kernels` on its own")
    _round_bfloat16_to_nearest(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from shc.kernels import fused_width

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
