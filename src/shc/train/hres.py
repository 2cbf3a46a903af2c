"""Per-layer summaries of ``H_res`` at eval time, read through the public connection API.

Forward-pre-hooks on the connection modules capture the streams each one receives and call
``conn.mixing(streams)``; per module the summary is averaged over tokens:

    identity distance  ||H_res - I||_F
    negative fraction  share of entries < -1e-6
    spectral norm      ||H_res||_2

(the full diagnostics live in ``shc.analysis``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..connections import HyperConnection


def summarize_res(res: torch.Tensor) -> dict[str, float]:
    """``res`` (..., n, n) -> the three token-averaged summaries."""
    res = res.reshape(-1, *res.shape[-2:]).float()
    eye = torch.eye(res.shape[-1], device=res.device)
    return {
        "identity_distance": torch.linalg.matrix_norm(res - eye).mean().item(),
        "negative_fraction": (res < -1e-6).float().mean().item(),
        "spectral_norm": torch.linalg.matrix_norm(res, ord=2).mean().item(),
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
