"""The shared loss and precision helpers."""

from __future__ import annotations

import math

import pytest
import torch

from hyperconn.train.loss import lm_loss
from hyperconn.train.precision import autocast, resolve_precision


def test_lm_loss_is_the_mean_negative_log_likelihood():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    y = torch.randint(0, 5, (2, 3))
    naive = -sum(torch.log_softmax(logits[b, t], -1)[y[b, t]] for b in range(2) for t in range(3)) / 6
    assert lm_loss(lambda x: x, logits, y).item() == pytest.approx(naive.item(), rel=1e-6)
    uniform = lm_loss(lambda x: x, torch.zeros(1, 4, 7), torch.zeros(1, 4, dtype=torch.long))
    assert uniform.item() == pytest.approx(math.log(7), rel=1e-6)


def test_lm_loss_is_float32_under_bf16_logits():
    logits = torch.randn(1, 2, 9, dtype=torch.bfloat16)
    assert lm_loss(lambda x: x, logits, torch.zeros(1, 2, dtype=torch.long)).dtype == torch.float32


def test_precision_resolution_and_autocast():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"  # no CUDA needed to decide
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_precision("fp16", "cpu")
    a = torch.randn(4, 4)
    with autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16
