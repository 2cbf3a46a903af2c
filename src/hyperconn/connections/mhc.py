"""mHC: Manifold-constrained Hyper-Connections (DeepSeek, arXiv 2512.24880).

``L = s_res d_res + b_res`` reshaped ``(n, n)``, with ``b_res = 0`` on the diagonal and ``-8``
off it (``res_init="identity"``, near ``I``) or ``b_res = 0`` everywhere (``res_init="uniform"``:
equal logits, which Sinkhorn maps to ``J = 11^T / n``); log-domain Sinkhorn for ``iters`` rounds
(columns then rows) gives ``H_res = exp(L)``, doubly stochastic up to the Sinkhorn error: rows
sum to 1 exactly (the final step divides each row by its sum), columns only approximately.
"""

from __future__ import annotations

import torch

from ..linalg import sinkhorn_log
from .base import CoefficientConnection, InferenceMixing, check_res_init, token_view

OFF_DIAGONAL_BIAS = -8.0


class MHC(CoefficientConnection):
    kind = "mhc"
    # the last Sinkhorn step normalises the rows; the columns sum to 1 only to the Sinkhorn error
    invariants = ("rows_sum_to_one", "nonnegative")

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        sinkhorn_iters: int = 20,
        recompute: bool = False,
        backend: str = "auto",
        mix_streams: bool = True,
        res_init: str = "identity",
    ) -> None:
        if isinstance(sinkhorn_iters, bool) or not isinstance(sinkhorn_iters, int) or sinkhorn_iters < 1:
            raise ValueError(f"mhc: sinkhorn_iters must be an integer >= 1, got {sinkhorn_iters!r}")
        self.sinkhorn_iters = sinkhorn_iters
        self.res_init = check_res_init(self.kind, res_init)
        super().__init__(num_streams, dim, layer_index, eps, recompute, backend, mix_streams)
        self.reset_parameters()

    def res_groups(self) -> tuple[int, ...]:
        return (self.num_streams**2,)

    def res_bias(self) -> torch.Tensor:
        n = self.num_streams
        if self.res_init == "uniform":
            return torch.zeros(n * n)
        return (OFF_DIAGONAL_BIAS * (1 - torch.eye(n))).reshape(-1)

    def res_logits(self, coefs: list[torch.Tensor]) -> torch.Tensor | None:
        """The pre-Sinkhorn logits ``L`` (..., n, n); ``None`` without ``H_res`` (``mix_streams=False``)."""
        if not self.mixes_streams:
            return None
        n = self.num_streams
        return coefs[0].reshape(*coefs[0].shape[:-1], n, n)

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        return sinkhorn_log(self.res_logits(coefs), self.sinkhorn_iters)

    # --- the gradient-free path (decode) -----------------------------------------------------
    def lean_mixing(self, coef: torch.Tensor, consts: dict[str, torch.Tensor], lead: tuple[int, ...]):
        """:func:`~hyperconn.linalg.sinkhorn_log` with ``L - logsumexp(L)`` as one ``log_softmax``,
        run on ``L^T`` (an ``as_strided`` view of the coefficients) so the result is ``H_res^T``:
        a column step of ``L`` is a row step of ``L^T``; the last step's ``exp`` is a ``softmax``.
        The GEMM matrix is ``[H_pre; H_post; H_res^T]``."""
        n, width = self.num_streams, coef.shape[-1]
        logits_t = coef.as_strided((coef.shape[0], n, n), (coef.stride(0), 1, n), coef.storage_offset() + 2 * n)
        for i in range(self.sinkhorn_iters):
            logits_t = torch.log_softmax(logits_t, dim=-1)  # columns of L
            last = i == self.sinkhorn_iters - 1
            logits_t = torch.softmax(logits_t, dim=-2) if last else torch.log_softmax(logits_t, dim=-2)
        gates = torch.sigmoid(coef)  # H_pre and H_post / 2 in the first 2n columns
        pre_post = gates.as_strided((coef.shape[0], 2, n), (width, n, 1), gates.storage_offset())
        mat = torch.cat([pre_post, logits_t], dim=1)
        return InferenceMixing(mat, token_view(gates, lead, (n, 1), (1, 1), n), res_row=2, post_scale=2.0)
