"""Run the Triton kernels under Triton's CPU interpreter, with small blocks.

Triton decides between compiling and interpreting when a function is decorated, and its own
``tl.sum`` & co. are decorated when ``triton`` is first imported, so ``TRITON_INTERPRET=1`` is
set here, at collection, before any test imports Triton (nothing else in the suite imports it at
collection; on CPU the rest of the suite never launches a Triton kernel, so the variable does not
affect it). Small blocks make the test shapes span several blocks with ragged ends.
"""

from __future__ import annotations

import os
import sys

import pytest

_TRITON_ALREADY_IMPORTED = "triton" in sys.modules
os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    pytest.importorskip("triton")
    if _TRITON_ALREADY_IMPORTED:
        pytest.fail("triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1; "
                    "run `pytest tests/kernels` on its own")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("SHC_DISABLE_TRITON", raising=False)
    from shc.kernels import fused_width

    monkeypatch.setattr(fused_width, "BLOCK_T", 16)
    monkeypatch.setattr(fused_width, "BLOCK_K", 32)
    monkeypatch.setattr(fused_width, "BLOCK_R", 32)
