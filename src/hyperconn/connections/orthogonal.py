"""oHC: Orthogonal Hyper-Connections (arXiv 2609.02672): ``H_res`` in the rotation group ``SO(n)``.

A doubly stochastic ``H_res`` (mHC) cannot amplify any direction of the streams but can shrink
their differences, layer after layer; an orthogonal one can neither amplify nor attenuate any
direction. oHC does *not* fix the all-ones direction: ``H_res`` is any rotation of the ``n``
streams, so their mean may rotate into their differences (fixing ``1`` would give
``H_res = J + P R P^T`` with ``R`` in ``SO(n-1)``: sHC with every singular value 1).

With ``k = n(n-1)/2`` residual coefficients ``d_A`` under one gate ``s_A`` and bias ``0``::

    z     = gamma tanh(s_A d_A + b_A)             (k), gamma learnable (init 1)
    A     = skew(z)                               (n x n), A^T = -A
    H_res = (I - A)(I + A)^{-1}                   Cayley: H H^T = I, det H = +1

``H_pre`` / ``H_post`` are mHC's (the shared coefficient machinery). At init ``z = 0`` and
``H_res = I``. The paper parameterises ``SO(4)`` by two unit quaternions; the Cayley map used here
works for every ``n >= 2`` (closed form for ``n <= 3``, an unrolled elimination beyond) and covers
every rotation without an eigenvalue ``-1`` (those are reached only in the limit ``|z| -> inf``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..linalg import cayley_from_params
from .base import CoefficientConnection


class Orthogonal(CoefficientConnection):
    kind = "orthogonal"
    invariants = ("orthogonal", "determinant_one")

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend)
        self.gamma = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            self.gamma.fill_(1.0)

    def initial_res(self) -> torch.Tensor:
        return torch.eye(self.num_streams, dtype=torch.float64)

    def res_groups(self) -> tuple[int, ...]:
        n = self.num_streams
        return (n * (n - 1) // 2,)

    def res_bias(self) -> torch.Tensor:
        return torch.zeros(sum(self.res_groups()))

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        z = torch.tanh(coefs[0]) * self.gamma.to(coefs[0].dtype)
        return cayley_from_params(z, self.num_streams)
