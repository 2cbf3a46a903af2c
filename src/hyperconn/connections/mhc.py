"""mHC: Manifold-constrained Hyper-Connections (DeepSeek, arXiv 2512.24880).

``L = s_res d_res + b_res`` reshaped ``(n, n)``, with ``b_res = 0`` on the diagonal and ``-8``
off it; log-domain Sinkhorn for ``iters`` rounds (columns then rows) gives
``H_res = exp(L)``, doubly stochastic up to the Sinkhorn error: rows sum to 1 to rounding after
the final row step, columns only approximately.
"""

from __future__ import annotations

import torch

from ..linalg import sinkhorn_log
from .base import CoefficientConnection

OFF_DIAGONAL_BIAS = -8.0


class MHC(CoefficientConnection):
    kind = "mhc"

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        sinkhorn_iters: int = 20,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        if isinstance(sinkhorn_iters, bool) or not isinstance(sinkhorn_iters, int) or sinkhorn_iters < 1:
            raise ValueError(f"mhc: sinkhorn_iters must be an integer >= 1, got {sinkhorn_iters!r}")
        self.sinkhorn_iters = sinkhorn_iters
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend)
        self.reset_parameters()

    def res_groups(self) -> tuple[int, ...]:
        return (self.num_streams**2,)

    def res_bias(self) -> torch.Tensor:
        n = self.num_streams
        return (OFF_DIAGONAL_BIAS * (1 - torch.eye(n))).reshape(-1)

    def res_logits(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        n = self.num_streams
        return coefs[0].reshape(*coefs[0].shape[:-1], n, n)

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        return sinkhorn_log(self.res_logits(coefs), self.sinkhorn_iters)
