"""The plain residual connection, ``x' = x + F(x)``, as a one-stream hyper-connection."""

from __future__ import annotations

import torch

from .base import HyperConnection, Mixing, compute_dtype
from .ops import autocast_off


class Residual(HyperConnection):
    """``n = 1``: ``H_pre = H_res = H_post = 1``. No parameters. ``recompute`` and ``backend`` are
    accepted and ignored (there is nothing to recompute, and ``x + F(x)`` needs no kernel)."""

    kind = "residual"
    invariants = ("identity",)  # H_res = 1

    def __init__(
        self, num_streams: int, dim: int, layer_index: int = 0, recompute: bool = False, backend: str = "auto"
    ) -> None:
        super().__init__(num_streams, dim, layer_index, recompute=False, backend=backend)

    def initial_res(self) -> torch.Tensor:
        return torch.ones(1, 1, dtype=torch.float64)

    def mixing(self, streams: torch.Tensor) -> Mixing:
        self.check_streams(streams)
        ones = streams.new_ones(streams.shape[:-1], dtype=compute_dtype(streams))
        return Mixing(ones, ones.unsqueeze(-1), ones)

    def inference_forward(self, streams: torch.Tensor, branch) -> torch.Tensor:
        # the plain ``x + F(x)`` steps: nothing to precompute
        return self.steps_forward(streams, branch)

    def width(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # identity coefficients: skip the mixing arithmetic altogether
        self.check_streams(streams)
        return streams[..., 0, :], streams, streams.new_ones(streams.shape[:-1], dtype=compute_dtype(streams))

    def depth(self, mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
        with autocast_off(mixed.device.type):
            return mixed + branch_out.unsqueeze(-2).to(mixed.dtype)
