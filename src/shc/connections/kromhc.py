"""KromHC: Kronecker-product doubly stochastic residual (arXiv 2601.21579). ``n = 2^K``.

For each factor ``k``: ``p_k = softmax(s_res d_k + b_k)[0]`` with ``b_k = (0, -8)``,
``U_k = [[p, 1-p], [1-p, p]]``; ``H_res = U_1 ⊗ U_2 ⊗ ... ⊗ U_K``. One gate for all factors.
"""

from __future__ import annotations

import torch

from ..linalg import batched_kron
from .base import CoefficientConnection

SECOND_BIAS = -8.0


def _log2_exact(n: int) -> int | None:
    k = n.bit_length() - 1
    return k if n >= 2 and (1 << k) == n else None


class KromHC(CoefficientConnection):
    kind = "kromhc"

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        if _log2_exact(num_streams) is None:
            raise ValueError(f"kromhc: num_streams must be a power of two >= 2, got {num_streams}")
        self.num_factors = _log2_exact(num_streams)
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend)
        self.reset_parameters()

    def res_groups(self) -> tuple[int, ...]:
        return (2 * self.num_factors,)  # one shared gate for all factors

    def res_bias(self) -> torch.Tensor:
        return torch.tensor([0.0, SECOND_BIAS]).repeat(self.num_factors)

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        pairs = coefs[0].reshape(*coefs[0].shape[:-1], self.num_factors, 2)
        p = torch.softmax(pairs, dim=-1)[..., 0]  # (..., K)
        q = 1 - p
        factors = [
            torch.stack([p[..., k], q[..., k], q[..., k], p[..., k]], dim=-1).reshape(*p.shape[:-1], 2, 2)
            for k in range(self.num_factors)
        ]
        return batched_kron(factors)
