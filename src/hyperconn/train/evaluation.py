"""Validation loss over a plan of validation windows (the whole split, or windows spread over it), all ranks.

``max_batches=None`` scores every target of the split exactly once (``full_split_plan``: the final
evaluation of a run); ``max_batches=k`` scores ``k * batch_size`` windows spread evenly over the
split (``spread_plan``: the periodic evaluations). Each rank scores its own share of the plan and
accumulates ``(sum of loss * targets, targets)``; one ``all_reduce`` at the end sums the ranks.

Under FSDP every forward pass is a collective, so every rank runs the same number of forward
passes: a rank whose share is one batch short runs one more batch of the plan and counts it with
weight 0 (at most one extra batch per rank).

Bits per byte (:func:`bits_per_byte`): ``val_bytes`` counts the bytes of the whole split and
``n_tokens - 1`` targets predict them, so the mean loss ``L`` over the full split gives exactly
``L * (n_tokens - 1) / (val_bytes * ln 2)`` = (total nats scored) / (ln 2 * bytes of the split).
For a subset of windows the same formula assumes the windows have the split's mean bytes per token
(an estimate; the final evaluation is always the full split).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..data.batching import full_split_plan, rank_share, read_batch, spread_plan
from ..diagnostics import MixingRecorder
from . import distributed as D
from .hres import summarize_calls
from .loss import lm_loss
from .precision import autocast

HRES_MAX_TOKENS = 4096  # tokens of the first batch whose H_res is summarised


class ValResult(NamedTuple):
    """``loss``: mean next-token loss (nats) over ``tokens`` scored targets, all ranks."""

    loss: float
    tokens: int


def bits_per_byte(loss: float, n_tokens: int, val_bytes: int) -> float:
    """``loss * (n_tokens - 1) / (val_bytes * ln 2)``: bits per byte of a split of ``n_tokens``
    tokens and ``val_bytes`` bytes whose mean target loss is ``loss`` nats (exact for the full split)."""
    if val_bytes <= 0:
        raise ValueError(f"val_bytes={val_bytes!r}: must be > 0")
    return float(loss) * (n_tokens - 1) / (val_bytes * math.log(2))


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    tokens,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: D.DistInfo | None = None,
    hres: dict | None = None,
) -> ValResult:
    """Mean next-token loss and targets scored: the whole split (``max_batches=None``) or
    ``max_batches * batch_size`` windows spread over it, all ranks.

    With ``hres`` (a dict), the first batch also records per-connection ``H_res`` summaries
    (``hyperconn.train.hres``) into it."""
    device = torch.device(device)
    info = info or D.DistInfo(device=device)
    bad = isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    if max_batches is not None and bad:
        raise ValueError(f"max_batches={max_batches!r}: must be None (the whole split) or an integer >= 1")
    n_tokens = int(tokens.shape[0])
    if max_batches is None:
        plan = full_split_plan(n_tokens, seq_len, batch_size)
    else:
        plan = spread_plan(n_tokens, seq_len, batch_size, max_batches * batch_size)
    share = rank_share(plan, info.rank, info.world_size)
    passes = -(-len(plan) // info.world_size) if info.distributed else len(share)  # the same on every rank
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, tokens)
    try:
        for i in range(passes):
            counted = i < len(share)
            x, y = read_batch(tokens, share[i] if counted else plan[0])
            x, y = x.to(device), y.to(device)
            if hres is not None and i == 0:
                recorder = MixingRecorder(model, max_tokens=HRES_MAX_TOKENS, with_logits=False)
                with recorder as rec, autocast(device, precision):
                    loss = lm_loss(model, x, y)
                hres.update(summarize_calls(rec.calls))
            else:
                with autocast(device, precision):
                    loss = lm_loss(model, x, y)
            if counted:
                n = float(y.numel())
                total += torch.stack([loss.double() * n, torch.tensor(n, dtype=torch.float64, device=device)])
    finally:
        model.train(was_training)
    total = D.all_reduce_sum(total, info)
    if total[1] == 0:
        raise ValueError("no validation batch: the validation split is too small for this seq_len and batch size")
    return ValResult((total[0] / total[1]).item(), int(total[1].item()))


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
    """The mean loss of :func:`evaluate_loss` (nats per target)."""
    return evaluate_loss(model, tokens, seq_len, batch_size, max_batches, device, precision, info, hres).loss
