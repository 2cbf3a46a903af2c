"""What a connection hands the Triton kernels: a small declared interface, no private fields.

The kernels never import the connection classes (``hyperconn.connections`` depends on ``hyperconn.kernels``,
not the reverse). A connection describes its width step by one of two records:

- :class:`ProjectedCoefficients`: the coefficient kinds (mhc, mhc_lite, kromhc, shc). A kernel
  computes ``raw = rsqrt(mean(x^2) + eps) * (x @ weight)``; the module's own
  ``coefficient_math(raw * scale + bias) -> (pre, res, post)`` runs in PyTorch (and is
  differentiated by autograd); a kernel mixes. ``fused_shc`` says the module's coefficient math
  is exactly sHC's closed form (gated tanh, 2x2/3x3 Cayley, ``J + P E P^T``), which the fused
  forward kernel then evaluates in registers; ``gamma`` is the sHC tensor it reads.
- :class:`GivenCoefficients`: anything else (hc, or a subclass that changed how coefficients
  are made): the module's own ``mixing(streams)`` in PyTorch, then the mixing kernel.

Either way the kernels compute what the module's PyTorch code defines, forward and backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

CoefficientMath = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class KernelRoute:
    """Which kernels would run a module, without building any tensor (the backend decision is
    taken on every call). ``route``: "fused_shc", "projection" or "mix"; ``total``: coefficients
    per token for the projection routes (0 for "mix")."""

    kind: str
    route: str
    total: int = 0


@dataclass(frozen=True)
class ProjectedCoefficients:
    kind: str
    weight: torch.Tensor  # (n C, total) float32, the RMSNorm gain folded in; autograd-connected
    scale: torch.Tensor  # (total,) float32, the gate of each coefficient
    bias: torch.Tensor  # (total,) float32
    eps: float
    coefficient_math: CoefficientMath
    fused_shc: bool = False
    gamma: torch.Tensor | None = None  # sHC's (gamma_U, gamma_V) when fused_shc

    @property
    def route(self) -> str:
        return "fused_shc" if self.fused_shc else "projection"

    @property
    def total(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True)
class GivenCoefficients:
    kind: str
    mixing: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @property
    def route(self) -> str:
        return "mix"

    @property
    def total(self) -> int:
        return 0
