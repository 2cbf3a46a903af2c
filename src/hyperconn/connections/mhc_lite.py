"""mHC-lite: doubly stochastic by Birkhoff-von Neumann (arXiv 2601.05732).

``a = softmax(s_res d_res + b_res)`` over all ``n!`` permutations (``res_init="identity"``:
``b_res = 0`` for the identity, ``-8`` for every other; ``res_init="uniform"``: ``b_res = 0`` for
all, so ``a_r = 1/n!`` and ``H_res = sum_r P_r / n! = J``, each entry ``(n-1)!/n! = 1/n``);
``H_res = sum_r a_r P_r``. Exactly doubly stochastic, but ``n!`` coefficients per token:
``n > 8`` is refused.
"""

from __future__ import annotations

import math

import torch

from ..linalg import permutation_matrices
from .base import CoefficientConnection, InferenceMixing, check_num_streams, check_res_init, token_view
from .constants import constant

MAX_STREAMS = 8
OTHER_PERMUTATION_BIAS = -8.0


class MHCLite(CoefficientConnection):
    kind = "mhc_lite"
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
        if num_streams > MAX_STREAMS:
            raise ValueError(
                f"mhc_lite: num_streams must be <= {MAX_STREAMS} (n! coefficients per token), "
                f"got {num_streams}"
            )
        self.res_init = check_res_init(self.kind, res_init)
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend, mix_streams)
        self.reset_parameters()

    def res_groups(self) -> tuple[int, ...]:
        return (math.factorial(self.num_streams),)

    def res_bias(self) -> torch.Tensor:
        if self.res_init == "uniform":
            return torch.zeros(math.factorial(self.num_streams))
        b = torch.full((math.factorial(self.num_streams),), OTHER_PERMUTATION_BIAS)
        b[0] = 0.0  # identity permutation comes first
        return b

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        n = self.num_streams
        weights = torch.softmax(coefs[0], dim=-1)
        perms = constant(_flat_permutations, (n,), weights.dtype, weights.device)
        return (weights @ perms).reshape(*weights.shape[:-1], n, n)

    # --- the gradient-free path (decode) -----------------------------------------------------
    def lean_mixing(self, coef: torch.Tensor, consts: dict[str, torch.Tensor], lead: tuple[int, ...]):
        """``vec(H_res^T) = softmax(c_res) @ vec(P_r^T)``; the GEMM matrix is ``[H_pre; H_post; H_res^T]``."""
        n, width = self.num_streams, coef.shape[-1]
        tokens, perms = coef.shape[0], math.factorial(n)
        logits = coef.as_strided((tokens, perms), (coef.stride(0), 1), coef.storage_offset() + 2 * n)
        weights = torch.softmax(logits, dim=-1)
        flat_t = constant(_flat_transposed_permutations, (n,), weights.dtype, weights.device)
        gates = torch.sigmoid(coef)  # H_pre and H_post / 2 in the first 2n columns
        pre_post = gates.as_strided((tokens, 2, n), (width, n, 1), gates.storage_offset())
        mat = torch.cat([pre_post, (weights @ flat_t).view(tokens, n, n)], dim=1)
        return InferenceMixing(mat, token_view(gates, lead, (n, 1), (1, 1), n), res_row=2, post_scale=2.0)


def _flat_transposed_permutations(n: int) -> torch.Tensor:
    """``P_r^T`` of the ``n!`` permutation matrices flattened to (n!, n^2), identity first."""
    return permutation_matrices(n, torch.float64).transpose(-1, -2).reshape(-1, n * n)


def _flat_permutations(n: int) -> torch.Tensor:
    """The ``n!`` permutation matrices flattened to (n!, n^2), identity first."""
    return permutation_matrices(n, torch.float64).reshape(-1, n * n)
