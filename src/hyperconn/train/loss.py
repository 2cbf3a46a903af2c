"""The language-model loss: one definition for the trainer, evaluation and the analysis probes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in nats of ``model(x)`` against ``y``, computed in float32
    (under bf16 autocast the logits are bf16; the log-softmax over the vocabulary is not)."""
    logits = model(x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
