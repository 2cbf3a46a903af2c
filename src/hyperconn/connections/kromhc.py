"""KromHC: Kronecker-product doubly stochastic residual (arXiv 2601.21579). ``n = 2^K``.

For each factor ``k``: ``p_k = softmax(s_res d_k + b_k)[0]`` with ``b_k = (0, -8)``
(``res_init="identity"``, near ``I``) or ``b_k = (0, 0)`` (``res_init="uniform"``: ``p_k = 1/2``,
every ``U_k = J_2`` and ``H_res = J_2 ⊗ ... ⊗ J_2 = J_n``),
``U_k = [[p, 1-p], [1-p, p]]``; ``H_res = U_1 ⊗ U_2 ⊗ ... ⊗ U_K``. One gate for all factors.
"""

from __future__ import annotations

import functools

import torch

from ..linalg import batched_kron
from . import polynomial as pl
from .base import CoefficientConnection, InferenceMixing, check_num_streams, check_res_init, token_view
from .polynomial import ONE_LOGIT

SECOND_BIAS = -8.0


def _log2_exact(n: int) -> int | None:
    k = n.bit_length() - 1
    return k if n >= 2 and (1 << k) == n else None


class KromHC(CoefficientConnection):
    kind = "kromhc"
    invariants = ("rows_sum_to_one", "columns_sum_to_one", "nonnegative", "spectral_norm_one")  # doubly stochastic

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
        mix_streams: bool = True,
        res_init: str = "identity",
    ) -> None:
        check_num_streams(self.kind, num_streams)
        if _log2_exact(num_streams) is None:
            raise ValueError(f"kromhc: num_streams must be a power of two >= 2, got {num_streams}")
        self.num_factors = _log2_exact(num_streams)
        self.res_init = check_res_init(self.kind, res_init)
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend, mix_streams)
        self.reset_parameters()

    def res_groups(self) -> tuple[int, ...]:
        return (2 * self.num_factors,)  # one shared gate for all factors

    def res_bias(self) -> torch.Tensor:
        second = 0.0 if self.res_init == "uniform" else SECOND_BIAS
        return torch.tensor([0.0, second]).repeat(self.num_factors)

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        pairs = coefs[0].reshape(*coefs[0].shape[:-1], self.num_factors, 2)
        p = torch.softmax(pairs, dim=-1)[..., 0]  # (..., K)
        q = 1 - p
        factors = [
            torch.stack([p[..., k], q[..., k], q[..., k], p[..., k]], dim=-1).reshape(*p.shape[:-1], 2, 2)
            for k in range(self.num_factors)
        ]
        return batched_kron(factors)

    # --- the gradient-free path (decode) -----------------------------------------------------
    # softmax([a, b])[0] = sigmoid(a - b) and 1 - sigmoid(t) = sigmoid(-t): the cached weight's
    # columns are [d_pre, d_post, +(d_k0 - d_k1), -(d_k0 - d_k1) per factor, 1 (ONE_LOGIT)], so one
    # sigmoid gives H_pre, H_post / 2 and every factor's (p_k, 1 - p_k); vec(H_res^T) is
    # multilinear in those pairs (decode_polynomial): one gather, one product and one GEMM.

    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        consts = super().inference_constants(dtype)
        if not self.mixes_streams:
            return consts
        n, k = self.num_streams, self.num_factors
        weight, bias = consts["weight"], consts["bias"]
        diff = weight[:, 2 * n :: 2] - weight[:, 2 * n + 1 :: 2]  # (F, K)
        bias_diff = bias[2 * n :: 2] - bias[2 * n + 1 :: 2]
        pairs_w = torch.stack([diff, -diff], dim=-1).reshape(weight.shape[0], 2 * k)
        pairs_b = torch.stack([bias_diff, -bias_diff], dim=-1).reshape(2 * k)
        consts["weight"] = torch.cat([weight[:, : 2 * n], pairs_w, weight.new_zeros(weight.shape[0], 1)], dim=-1)
        consts["bias"] = torch.cat([bias[: 2 * n], pairs_b, bias.new_full((1,), ONE_LOGIT)])
        index, poly_map = decode_polynomial(n)
        consts["index"] = index.to(weight.device)
        consts["map"] = poly_map.to(dtype=dtype, device=weight.device)
        return consts

    def lean_mixing(self, coef: torch.Tensor, consts: dict[str, torch.Tensor], lead: tuple[int, ...]):
        n = self.num_streams
        rows = torch.sigmoid(coef)[:, consts["index"]].prod(-1) @ consts["map"]  # [H_pre; H_post / 2; H_res^T]
        post = token_view(rows, lead, (n, 1), (1, 1), n)
        return InferenceMixing(rows.view(-1, n + 2, n), post, res_row=2, post_scale=2.0)


@functools.cache
def decode_polynomial(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, map)`` of KromHC's gradient-free path: with the sigmoid outputs ``a`` ordered
    ``[H_pre, H_post / 2, (p_1, 1 - p_1), ..., (p_K, 1 - p_K), 1]``, ``a[:, index].prod(-1) @ map``
    is ``[H_pre; H_post / 2; H_res^T]`` row-major ((n + 2) n). ``vec(H_res^T)`` is multilinear
    in the pairs: the sum over the ``2^K`` corners ``c`` of ``prod_k a_k[c_k]`` times
    :func:`batched_kron` of the factors ``U_k`` at ``a_k = e_{c_k}``. float64 / long, CPU."""
    k = _log2_exact(n)
    one = 2 * n + 2 * k
    outputs = [pl.var(a) for a in range(2 * n)]
    res_t = [dict() for _ in range(n * n)]
    basis = torch.eye(2, dtype=torch.float64)
    for corner in torch.cartesian_prod(*[torch.arange(2)] * k).reshape(-1, k).tolist():
        factors = [torch.stack([basis[c], basis[1 - c]]).unsqueeze(0) for c in corner]
        values = batched_kron(factors)[0].t().reshape(-1)
        mono = pl.mul(*[pl.var(2 * n + 2 * f + c) for f, c in enumerate(corner)])
        res_t = [pl.add(r, pl.scale(mono, float(v))) for r, v in zip(res_t, values, strict=True)]
    return pl.compile_polys(outputs + res_t, one)
