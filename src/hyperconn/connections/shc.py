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
import functools

import torch
from torch import nn

from ..kernels.interface import KernelRoute
from ..linalg import cayley_from_params, cayley_quadratic_map, helmert_basis
from . import polynomial as pl
from .base import CoefficientConnection, InferenceMixing, check_num_streams, token_view
from .constants import centre_matrix, constant
from .polynomial import ONE_LOGIT

DEFAULT_SIGMA_BIAS = 4.0


def sandwich_matrix(n: int) -> torch.Tensor:
    """``K`` (m^2, n^2) with ``vec(P E P^T) = vec(E) @ K``, ``K[(i, k), (a, b)] = P[a, i] P[b, k]``:
    one GEMM over all tokens replaces two per-token (n x m) matmuls. float64."""
    p = helmert_basis(n, torch.float64)
    return torch.einsum("ai,bk->ikab", p, p).reshape((n - 1) ** 2, n * n)


class SHC(CoefficientConnection):
    kind = "shc"
    invariants = ("rows_sum_to_one", "columns_sum_to_one", "spectral_norm_one")

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

    def initial_res(self) -> torch.Tensor | None:
        """``J + tanh(sigma_bias) (I - J)``: ``U = V = I`` and every ``sigma_i = tanh(sigma_bias)``."""
        if not self.mixes_streams:
            return super().initial_res()
        n = self.num_streams
        centre = torch.full((n, n), 1.0 / n, dtype=torch.float64)
        sigma = torch.tanh(torch.tensor(self.sigma_bias, dtype=torch.float64))
        return centre + sigma * (torch.eye(n, dtype=torch.float64) - centre)

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
    # With sigmoid(c) = (1 + tanh(c / 2)) / 2, one tanh serves every group: the cached weight has
    # the 1/2 folded into the H_pre / H_post columns and one extra column that is exactly 1
    # (ONE_LOGIT). Cayley's U = N(z) / (1 + |z|^2) with N quadratic in [1, z]
    # (cayley_quadratic_map), so every entry of [H_pre; H_res^T; H_post] times
    # den = (1 + |z_U|^2)(1 + |z_V|^2), and den itself, is a polynomial in the tanh outputs
    # (decode_polynomial): one gather, one product, one GEMM and one division per call.

    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        consts = super().inference_constants(dtype)
        if self.rank > 3 or not self.mixes_streams:
            return consts
        n, k = self.num_streams, self.num_angles
        weight, bias = consts["weight"], consts["bias"]
        zero = weight.new_zeros(weight.shape[0], 1)
        consts["weight"] = torch.cat([weight[:, : 2 * n] * 0.5, weight[:, 2 * n :], zero], dim=-1)
        consts["bias"] = torch.cat([bias[: 2 * n] * 0.5, bias[2 * n :], bias.new_full((1,), ONE_LOGIT)])
        index, poly_map, powers = decode_polynomial(n)
        if k > 0:  # z = gamma t: each factor of z_U (z_V) in a monomial brings one gamma_U (gamma_V)
            gamma = self.gamma.to(torch.float64)
            poly_map = poly_map * (gamma[0] ** powers[:, 0] * gamma[1] ** powers[:, 1]).unsqueeze(-1)
        consts["index"] = index.reshape(-1).to(weight.device)  # flat, for one index_select
        consts["map"] = poly_map.to(dtype=dtype, device=weight.device)
        return consts

    def lean_mixing(self, coef: torch.Tensor, consts: dict[str, torch.Tensor], lead: tuple[int, ...]):
        if self.rank > 3:
            return super().lean_mixing(coef, consts, lead)
        n = self.num_streams
        gathered = torch.index_select(torch.tanh(coef), 1, consts["index"])
        monomials = gathered.view(coef.shape[0], consts["map"].shape[0], -1).prod(-1)  # a map row per monomial
        num, den = (monomials @ consts["map"]).split_with_sizes((n * (n + 2), 1), dim=-1)
        rows = num / den  # [H_pre; H_res^T; H_post], (tokens, (n + 2) n)
        post = token_view(rows, lead, (n, 1), (1, 1), (n + 1) * n)
        return InferenceMixing(rows.view(-1, n + 2, n), post)

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


@functools.cache
def decode_polynomial(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(index, map, powers)`` of sHC's gradient-free path at ``n <= 4`` (``m <= 3``), gammas = 1.

    The tanh outputs ``t`` (tokens, 2n + m^2 + 1) are ordered ``[t_pre, t_post, t_U, t_V,
    t_sigma, 1]``; ``t[:, index].prod(-1) @ map`` gives ``den * [H_pre; H_res^T; H_post]``
    row-major ((n + 2) n) then ``den``, with ``H_pre = (1 + t_pre) / 2``, ``H_post = 1 + t_post``,
    ``z = gamma t``, ``sigma = t_sigma`` and
    ``H_res^T = J + (P N_V) diag(sigma) (P N_U)^T / den`` (module doc, ``U = N_U / (1 + |z_U|^2)``).
    ``powers`` (R, 2): the factors of ``t_U`` and ``t_V`` in each monomial. float64 / long, CPU."""
    m = n - 1
    k = m * (m - 1) // 2
    u0, v0, s0, one = 2 * n, 2 * n + k, 2 * n + 2 * k, 2 * n + 2 * k + m
    p = helmert_basis(n, torch.float64)

    def cayley(first: int) -> tuple[list[list[pl.Poly]], pl.Poly]:
        """``P N`` (n x m polys) and ``1 + |z|^2`` for the rotation whose angles start at ``first``."""
        if m == 1:
            return [[pl.const(float(p[b, 0]))] for b in range(n)], pl.const(1.0)
        quad = cayley_quadratic_map(m)  # ((k+1)^2, m^2 + 1)
        z1 = [pl.const(1.0)] + [pl.var(first + a) for a in range(k)]
        outer = [pl.mul(z1[a], z1[b]) for a in range(k + 1) for b in range(k + 1)]
        entry = lambda col: pl.add(*[pl.scale(q, float(quad[r, col])) for r, q in enumerate(outer)])  # noqa: E731
        num = [[entry(i * m + j) for j in range(m)] for i in range(m)]
        pn = [[pl.add(*[pl.scale(num[i][j], float(p[b, i])) for i in range(m)]) for j in range(m)] for b in range(n)]
        return pn, entry(m * m)

    pn_u, den_u = cayley(u0)
    pn_v, den_v = cayley(v0)
    den = pl.mul(den_u, den_v)
    rows = [pl.mul(pl.add(pl.const(0.5), pl.var(a, 0.5)), den) for a in range(n)]
    for a in range(n):
        for b in range(n):
            terms = [pl.mul(pn_v[a][j], pl.var(s0 + j), pn_u[b][j]) for j in range(m)]
            rows.append(pl.add(pl.scale(den, 1.0 / n), *terms))
    rows += [pl.mul(pl.add(pl.const(1.0), pl.var(n + a)), den) for a in range(n)]
    index, poly_map = pl.compile_polys([*rows, den], one)
    powers = pl.exponents(index, [list(range(u0, v0)), list(range(v0, s0))])
    return index, poly_map, powers.to(torch.float64)
