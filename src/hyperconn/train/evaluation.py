"""Validation loss over the fixed validation windows, summed over all ranks."""

from __future__ import annotations

import torch
from torch import nn

from ..data import val_batches
from ..diagnostics import MixingRecorder
from . import distributed as D
from .hres import summarize_calls
from .loss import lm_loss
from .precision import autocast

HRES_MAX_TOKENS = 4096  # tokens of the first batch whose H_res is summarised


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    tokens,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: D.DistInfo | None = None,
    hres: dict | None = None,
) -> float:
    """Mean next-token loss (nats) over (up to ``max_batches`` of) the validation windows, all ranks.

    With ``hres`` (a dict), the first batch also records per-connection ``H_res`` summaries
    (``hyperconn.train.hres``) into it."""
    device = torch.device(device)
    info = info or D.DistInfo(device=device)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    try:
        batches = val_batches(tokens, seq_len, batch_size, max_batches, info.rank, info.world_size)
        for i, (x, y) in enumerate(batches):
            x, y = x.to(device), y.to(device)
            if hres is not None and i == 0:
                recorder = MixingRecorder(model, max_tokens=HRES_MAX_TOKENS, with_logits=False)
                with recorder as rec, autocast(device, precision):
                    loss = lm_loss(model, x, y)
                hres.update(summarize_calls(rec.calls))
            else:
                with autocast(device, precision):
                    loss = lm_loss(model, x, y)
            total += torch.stack([loss.double() * y.numel(), torch.tensor(float(y.numel()), device=device)])
    finally:
        model.train(was_training)
    total = D.all_reduce_sum(total, info)
    if total[1] == 0:
        raise ValueError("no validation batch: the validation split is too small for this seq_len and batch size")
    return (total[0] / total[1]).item()
