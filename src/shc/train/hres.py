"""Per-layer summaries of ``H_res`` at eval time, read through the public connection API.

Forward-pre-hooks on the connection modules capture the streams each one receives and call
``conn.mixing(streams)``; per module the summary is averaged over tokens:

    identity distance  ||H_res - I||_F
    negative fraction  share of entries < -1e-6
    spectral norm      ||H_res||_2

(the definitions live once, in ``shc.inspect.diagnostics``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..connections import HyperConnection
from ..inspect.diagnostics import identity_distance, negative_fraction, spectral_norm


def summarize_res(res: torch.Tensor) -> dict[str, float]:
    """``res`` (..., n, n) -> the three token-averaged summaries."""
    return {
        "identity_distance": identity_distance(res).mean().item(),
        "negative_fraction": negative_fraction(res).mean().item(),
        "spectral_norm": spectral_norm(res).mean().item(),
    }


@contextmanager
def capture_hres(model: nn.Module, max_tokens: int = 4096):
    """Inside the block, one forward fills the yielded dict ``{"l<layer>.<name>": summary}``."""
    summaries: dict[str, dict[str, float]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, HyperConnection):
            short = name.split(".")[-1].replace("_conn", "")
            label = f"l{module.layer_index:02d}.{short}"

            def hook(mod, args, label=label):
                if label in summaries:
                    return
                streams = args[0].detach()
                streams = streams.reshape(-1, *streams.shape[-2:])[:max_tokens]
                with torch.no_grad():
                    summaries[label] = summarize_res(mod.mixing(streams).res)

            handles.append(module.register_forward_pre_hook(hook))
    try:
        yield summaries
    finally:
        for h in handles:
            h.remove()
