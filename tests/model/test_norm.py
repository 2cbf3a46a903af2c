"""The model's RMSNorm under bf16 autocast: fused path (no dtype-mismatch warning), values of the
float32 composite definition, float32 gain gradient."""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.support import SMALL, small_model

from hyperconn.model.norm import RMSNorm

BF16_ULP = 2.0**-7  # spacing of bf16 numbers in [1, 2): 8 significant bits


def naive_rms_norm(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * g`` in float64, rounded once to ``x.dtype``."""
    x64 = x.double()
    return (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps) * g.double()).to(x.dtype)


def test_bf16_input_matches_the_float32_definition_within_one_rounding():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(16))
    x = torch.randn(64, 16).bfloat16()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = norm(x)
    assert y.dtype == torch.bfloat16
    ref = naive_rms_norm(x, norm.weight, 1e-6)
    # the only difference from the float64 reference is float32 arithmetic before the single
    # rounding to bf16: at most one bf16 spacing at the value's magnitude
    spacing = BF16_ULP * torch.exp2(torch.floor(torch.log2(ref.double().abs().clamp_min(1e-30))))
    assert ((y.double() - ref.double()).abs() <= spacing).all()


def test_same_dtype_is_plain_rmsnorm_exactly():
    torch.manual_seed(1)
    norm, plain = RMSNorm(8, eps=1e-5), torch.nn.RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        plain.weight.copy_(norm.weight)
    x = torch.randn(5, 8)
    assert torch.equal(norm(x), plain(x))
    assert list(norm.state_dict()) == ["weight"]


@pytest.mark.parametrize("kind", ["residual", "shc", "mhc"])
def test_bf16_autocast_forward_backward_raises_no_dtype_warning_and_tracks_fp32(kind):
    model = small_model(kind)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(idx).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(idx)
        out.float().sum().backward()
    for name, p in model.named_parameters():
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            assert p.grad is not None and p.grad.dtype == torch.float32, name
    # every GEMM input rounds to bf16 (relative error 2^-9 each); through two blocks and the head
    # the logits' error stays within a few bf16 spacings of the logits' scale
    scale = ref.abs().max().item()
    assert (out.float() - ref).abs().max().item() <= 8 * BF16_ULP * scale
