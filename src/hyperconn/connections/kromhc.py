"""KromHC: Kronecker-product doubly stochastic residual (arXiv 2601.21579). ``n = 2^K``.

For each factor ``k``: ``p_k = softmax(s_res d_k + b_k)[0]`` with ``b_k = (0, -8)``
(``res_init="identity"``, near ``I``) or ``b_k = (0, 0)`` (``res_init="uniform"``: ``p_k = 1/2``,
every ``U_k = J_2`` and ``H_res = J_2 ⊗ ... ⊗ J_2 = J_n``),
``U_k = [[p, 1-p], [1-p, p]]``; ``H_res = U_1 ⊗ U_2 ⊗ ... ⊗ U_K``. One gate for all factors.
"""

from __future__ import annotations

import torch

from ..linalg import batched_kron
from .base import CoefficientConnection, check_num_streams, check_res_init, compute_dtype

SECOND_BIAS = -8.0


def _log2_exact(n: int) -> int | None:
    k = n.bit_length() - 1
    return k if n >= 2 and (1 << k) == n else None


class KromHC(CoefficientConnection):
    kind = "kromhc"
    res_columns_sum_to_one = True
    res_rows_sum_to_one = True

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
    # columns are [d_pre, d_post / 1, +(d_k0 - d_k1), -(d_k0 - d_k1) per factor], so one sigmoid
    # gives H_pre, H_post / 2 and every factor's (p_k, 1 - p_k); vec(H_res^T) is multilinear in
    # those pairs: the outer product of the K pairs times a constant 0/1 map (2^K, n^2).

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
        consts["weight"] = torch.cat([weight[:, : 2 * n], pairs_w], dim=-1)
        consts["bias"] = torch.cat([bias[: 2 * n], pairs_b])
        scale = torch.ones(2 * n + 2 * k, dtype=dtype, device=weight.device)
        scale[n : 2 * n] = 2.0  # H_post = 2 sigmoid
        consts["scale"] = scale
        # vec(H_res^T) = (a_1 ⊗ ... ⊗ a_K) @ kron_map, a_k = (p_k, 1 - p_k): evaluated on the basis
        basis = torch.eye(2, dtype=torch.float64)
        rows = []
        for corner in torch.cartesian_prod(*[torch.arange(2)] * k).reshape(-1, k).tolist():
            factors = [torch.stack([basis[c], basis[1 - c]]).unsqueeze(0) for c in corner]
            rows.append(batched_kron(factors)[0].t().reshape(-1))
        consts["kron"] = torch.stack(rows).to(dtype=dtype, device=weight.device)
        return consts

    def inference_width_matrix(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.exact_kind or not self.mixes_streams:
            return super().inference_width_matrix(streams)
        n, k = self.num_streams, self.num_factors
        consts = self.cached_inference_constants(compute_dtype(streams), streams.device)
        act = torch.sigmoid(self.inference_coefficients(streams, consts)) * consts["scale"]
        tokens = act.shape[0]
        pre, post, pairs = act.split_with_sizes((n, n, 2 * k), dim=-1)
        corners = pairs[:, 0:2]
        for f in range(1, k):
            corners = (corners.unsqueeze(-1) * pairs[:, 2 * f : 2 * f + 2].unsqueeze(-2)).reshape(tokens, -1)
        res_t = (corners @ consts["kron"]).view(tokens, n, n)
        return torch.cat([pre.unsqueeze(1), res_t], dim=1), post.view(*streams.shape[:-2], n)
