"""sHC / s²HC: Spectral-Sphere-Constrained Hyper-Connections (arXiv 2603.20896).

With ``m = n - 1`` and ``k = m(m-1)/2``, the ``m^2 = 2k + m`` residual coefficients split into
``d_U (k)``, ``d_V (k)``, ``d_sigma (m)``, each with its own gate and bias::

    z_U   = gamma_U tanh(s_U d_U + b_U),   z_V = gamma_V tanh(s_V d_V + b_V)
    sigma = tanh(s_sigma d_sigma + b_sigma)               each sigma_i in (-1, 1)
    U = Cayley(skew(z_U)),  V = Cayley(skew(z_V))         orthogonal, det +1
    E = U diag(sigma) V^T                                  (m x m)
    H_res = J + P E P^T                                    J = 11^T / n, P the Helmert basis

so rows and columns of ``H_res`` sum to 1, its singular values are ``{1} ∪ {|sigma_i|}``
(spectral norm exactly 1), entries may be negative, and the set is closed under products.
At init ``U = V = I`` and ``H_res = J + tanh(b_sigma) (I - J)``. For ``n = 2`` (``m = 1``,
``k = 0``) there are no rotations: only ``d_sigma`` and no ``gamma`` (a parameter that could never
receive a gradient would stall DDP).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..kernels.interface import ProjectedCoefficients
from ..linalg import cayley_from_params, helmert_basis
from .base import CoefficientConnection
from .constants import centre_matrix, constant

DEFAULT_SIGMA_BIAS = 4.0


def sandwich_matrix(n: int) -> torch.Tensor:
    """``K`` (m^2, n^2) with ``vec(P E P^T) = vec(E) @ K``, ``K[(i, k), (a, b)] = P[a, i] P[b, k]``:
    one GEMM over all tokens replaces two per-token (n x m) matmuls. float64."""
    p = helmert_basis(n, torch.float64)
    return torch.einsum("ai,bk->ikab", p, p).reshape((n - 1) ** 2, n * n)


class SHC(CoefficientConnection):
    kind = "shc"

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        sigma_bias: float = DEFAULT_SIGMA_BIAS,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        if num_streams < 2:
            raise ValueError(f"shc: num_streams must be >= 2, got {num_streams}")
        if not -1e3 < sigma_bias < 1e3:  # also refuses NaN
            raise ValueError(f"shc: sigma_bias must be a finite number, got {sigma_bias}")
        self.sigma_bias = float(sigma_bias)
        self.rank = num_streams - 1  # m
        self.num_angles = self.rank * (self.rank - 1) // 2  # k
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend)
        if self.num_angles > 0:
            self.gamma = nn.Parameter(torch.empty(2))  # (gamma_U, gamma_V)
        else:
            self.register_parameter("gamma", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.gamma is not None:
            with torch.no_grad():
                self.gamma.fill_(1.0)

    def res_groups(self) -> tuple[int, ...]:
        if self.num_angles == 0:
            return (self.rank,)  # d_sigma only
        return (self.num_angles, self.num_angles, self.rank)  # d_U, d_V, d_sigma

    def res_bias(self) -> torch.Tensor:
        return torch.cat([torch.zeros(2 * self.num_angles), torch.full((self.rank,), self.sigma_bias)])

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        m, n, k = self.rank, self.num_streams, self.num_angles
        # one tanh for all groups, then the per-group scales (gamma_U, gamma_V, 1)
        act = torch.tanh(torch.cat(coefs, dim=-1))
        lead = act.shape[:-1]
        if m == 1:
            e = act  # U = V = 1: E = sigma
        else:
            scale = torch.cat([self.gamma.to(act.dtype).repeat_interleave(k), act.new_ones(m)])
            act = act * scale
            # U and V in one batched Cayley transform, (..., 2, m, m)
            uv = cayley_from_params(act[..., : 2 * k].reshape(*lead, 2, k), m)
            sigma = act[..., 2 * k :]
            u, v = uv[..., 0, :, :], uv[..., 1, :, :]
            # E[i, k] = sum_j U[i, j] sigma[j] V[k, j], a broadcast product over m^3 numbers per token
            e = ((u * sigma.unsqueeze(-2)).unsqueeze(-2) * v.unsqueeze(-3)).sum(-1).reshape(*lead, m * m)
        centre = constant(centre_matrix, (n,), e.dtype, e.device).reshape(1, n * n)
        sandwich = constant(sandwich_matrix, (n,), e.dtype, e.device)
        res = torch.addmm(centre, e.reshape(-1, m * m), sandwich)
        return res.reshape(*lead, n, n)

    def kernel_spec(self):
        """sHC at n = 3, 4 with this class's own math: the fused forward kernel evaluates it."""
        spec = super().kernel_spec()
        cls = type(self)
        exact = (
            isinstance(spec, ProjectedCoefficients)
            and cls.res_matrix is SHC.res_matrix
            and cls.coefficient_math is CoefficientConnection.coefficient_math
            and self.num_streams in (3, 4)
        )
        return dataclasses.replace(spec, fused_shc=True, gamma=self.gamma) if exact else spec
