"""The model's RMSNorm: ``y = x * rsqrt(mean(x^2) + eps) * g``, computed in float32 when the
input's dtype differs from the gain's.

Under bf16 autocast a norm after a projection (the attention's q/k norms) gets a bf16 input while
its gain ``g`` stays float32; ``nn.RMSNorm`` then leaves the fused kernel (with a warning) for its
composite path, which upcasts to float32, multiplies by the float32 gain and casts the result back
to the input's dtype. This module does exactly that explicitly,
``rms_norm(x.float(), g) -> x.dtype``, so the fused kernel runs, the values equal the composite
path's and the gain's gradient stays float32. Same dtypes: plain ``nn.RMSNorm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters and state-dict keys) that keeps the fused kernel when the
    input's dtype is not the gain's, by normalising in float32 and casting back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight is None or x.dtype == weight.dtype:
            return super().forward(x)
        y = F.rms_norm(x.float(), self.normalized_shape, weight.float(), self.eps)
        return y.to(x.dtype)
