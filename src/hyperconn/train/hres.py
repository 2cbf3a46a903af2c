"""Per-layer summaries of ``H_res`` at eval time, recorded by ``hyperconn.diagnostics.MixingRecorder``
(forward-pre-hooks that read each connection's coefficients through its public ``mixing``).

Per connection, averaged over (the first ``max_tokens``) tokens of one batch::

    identity distance  ||H_res - I||_F
    negative fraction  share of entries < -1e-6
    spectral norm      ||H_res||_2

(the definitions live once, in ``hyperconn.diagnostics.metrics``).
"""

from __future__ import annotations

import torch

from ..diagnostics import Call
from ..diagnostics.metrics import identity_distance, negative_fraction, spectral_norm


def summarize_res(res: torch.Tensor) -> dict[str, float]:
    """``res`` (..., n, n) -> the three token-averaged summaries."""
    return {
        "identity_distance": identity_distance(res).mean().item(),
        "negative_fraction": negative_fraction(res).mean().item(),
        "spectral_norm": spectral_norm(res).mean().item(),
    }


def label(call: Call) -> str:
    """``l<layer>.<sublayer>``: ``blocks.3.attn_conn`` of layer 3 -> ``l03.attn``."""
    short = call.name.split(".")[-1].removesuffix("_conn")
    return f"l{call.module.layer_index:02d}.{short}"


def summarize_calls(calls: list[Call]) -> dict[str, dict[str, float]]:
    """``{label: summary}`` for the first call of each connection."""
    out: dict[str, dict[str, float]] = {}
    for call in calls:
        out.setdefault(label(call), summarize_res(call.res))
    return out
