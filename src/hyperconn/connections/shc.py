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

from ..kernels.interface import KernelRoute
from ..linalg import cayley_from_params, cayley_quadratic_map, helmert_basis
from .base import CoefficientConnection, check_num_streams, compute_dtype
from .constants import centre_matrix, constant

DEFAULT_SIGMA_BIAS = 4.0


def sandwich_matrix(n: int) -> torch.Tensor:
    """``K`` (m^2, n^2) with ``vec(P E P^T) = vec(E) @ K``, ``K[(i, k), (a, b)] = P[a, i] P[b, k]``:
    one GEMM over all tokens replaces two per-token (n x m) matmuls. float64."""
    p = helmert_basis(n, torch.float64)
    return torch.einsum("ai,bk->ikab", p, p).reshape((n - 1) ** 2, n * n)


class SHC(CoefficientConnection):
    kind = "shc"
    res_columns_sum_to_one = True
    res_rows_sum_to_one = True

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        sigma_bias: float = DEFAULT_SIGMA_BIAS,
        recompute: bool = False,
        backend: str = "auto",
        mix_streams: bool = True,
    ) -> None:
        check_num_streams("shc", num_streams)
        real = isinstance(sigma_bias, int | float) and not isinstance(sigma_bias, bool)
        if not real or not -1e3 < sigma_bias < 1e3:  # also refuses NaN
            raise ValueError(f"shc: sigma_bias must be a finite number, got {sigma_bias!r}")
        self.sigma_bias = float(sigma_bias)
        self.rank = num_streams - 1  # m
        self.num_angles = self.rank * (self.rank - 1) // 2  # k
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend, mix_streams)
        if self.num_angles > 0 and self.mixes_streams:
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

    # --- the gradient-free path (decode) -----------------------------------------------------
    # For m = 2, 3 the whole coefficient math is a few GEMMs and elementwise ops. With
    # sigmoid(c) = (1 + tanh(c / 2)) / 2, one tanh serves every group: the cached weight has the
    # 1/2 folded into the H_pre / H_post columns, and one affine map after the tanh gives
    # [H_pre, H_post, 1, z_U, 1, z_V, sigma] (the two 1s are zero columns with shift 1). Cayley's
    # numerator is quadratic in z and its denominator is 1 + |z|^2 (cayley_quadratic_map), so
    # P N(z) and 1 + |z|^2 are one GEMM of the outer product [1, z] [1, z]^T, for U and V at once,
    # and H_res^T = J + (P N_V) diag(sigma) (P N_U)^T / ((1 + |z_U|^2)(1 + |z_V|^2)).

    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        consts = super().inference_constants(dtype)
        if self.rank not in (2, 3) or not self.mixes_streams:
            return consts
        n, m, k = self.num_streams, self.rank, self.num_angles
        weight, bias = consts["weight"], consts["bias"]
        zero = weight.new_zeros(weight.shape[0], 1)
        half = 0.5 * torch.ones(2 * n, dtype=dtype, device=weight.device)
        cols = [weight[:, : 2 * n] * half, zero, weight[:, 2 * n : 2 * n + k], zero, weight[:, 2 * n + k :]]
        consts["weight"] = torch.cat(cols, dim=-1)
        one = bias.new_zeros(1)
        consts["bias"] = torch.cat([bias[: 2 * n] * half, one, bias[2 * n : 2 * n + k], one, bias[2 * n + k :]])
        gamma = self.gamma.to(dtype)
        ones = lambda size: torch.ones(size, dtype=dtype, device=weight.device)  # noqa: E731
        # after the tanh: H_pre = (1 + t) / 2, H_post = 1 + t, z = gamma t, sigma = t, and the 1s
        consts["scale"] = torch.cat(
            [0.5 * ones(n), ones(n), 0 * ones(1), gamma[0] * ones(k), 0 * ones(1), gamma[1] * ones(k), ones(m)]
        )
        consts["shift"] = torch.cat(
            [0.5 * ones(n), ones(n), ones(1), 0 * ones(k), ones(1), 0 * ones(k), 0 * ones(m)]
        )
        helmert = constant(helmert_basis, (n, torch.float64), torch.float64, weight.device)
        # (k+1)^2 -> vec(P N) (n m) and the denominator (1)
        quad = cayley_quadratic_map(m)  # ((k+1)^2, m^2 + 1), float64
        num = quad[:, : m * m].reshape(-1, m, m)
        consts["cayley"] = torch.cat([(helmert @ num).reshape(-1, n * m), quad[:, m * m :]], dim=-1).to(dtype)
        consts["centre"] = constant(centre_matrix, (n,), dtype, weight.device)
        return consts

    def inference_width_matrix(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.exact_kind or self.rank not in (2, 3) or not self.mixes_streams:
            return super().inference_width_matrix(streams)
        n, m, k = self.num_streams, self.rank, self.num_angles
        consts = self.cached_inference_constants(compute_dtype(streams), streams.device)
        coef = self.inference_coefficients(streams, consts)
        act = torch.addcmul(consts["shift"], torch.tanh(coef), consts["scale"])
        tokens = act.shape[0]
        pre, post, z1, sigma = act.split_with_sizes((n, n, 2 * (k + 1), m), dim=-1)
        z1 = z1.view(tokens, 2, k + 1)
        outer = (z1.unsqueeze(-1) * z1.unsqueeze(-2)).view(2 * tokens, (k + 1) ** 2)
        # [vec(P N), 1 + |z|^2] for U and V
        pn, den = (outer @ consts["cayley"]).view(tokens, 2, n * m + 1).split_with_sizes((n * m, 1), dim=-1)
        pn_u, pn_v = pn.view(tokens, 2, n, m).unbind(1)
        den = den.prod(1, keepdim=True)  # (tokens, 1, 1)
        res_t = torch.addcdiv(consts["centre"], torch.bmm(pn_v * sigma.unsqueeze(1), pn_u.transpose(1, 2)), den)
        mat = torch.cat([pre.unsqueeze(1), res_t], dim=1)
        return mat, post.view(*streams.shape[:-2], n)

    def kernel_route(self) -> KernelRoute:
        """sHC at n = 3, 4 with this class's own math: the fused forward kernel evaluates it."""
        route = super().kernel_route()
        exact = route.route == "projection" and self.exact_kind and self.mixes_streams and self.num_streams in (3, 4)
        return dataclasses.replace(route, route="fused_shc") if exact else route

    def kernel_spec(self):
        spec = super().kernel_spec()
        if self.kernel_route().route == "fused_shc":
            return dataclasses.replace(spec, fused_shc=True, gamma=self.gamma)
        return spec
