"""HC: dynamic Hyper-Connections (Zhu et al., arXiv 2409.19606). Unconstrained.

Per-stream ``x~_i = RMSNorm(x_i)`` over ``C`` (learnable gain), then::

    alpha  = alpha_static + s_alpha * tanh(x~ @ W_alpha)     (n, n+1), W_alpha (C, n+1) zero-init
    H_pre  = alpha[:, 0],   H_res = alpha[:, 1:]
    H_post = beta_static + s_beta * tanh(x~ @ w_beta)       w_beta (C,) zero-init

with ``alpha_static = [e_{layer_index mod n} | I_n]``, ``beta_static = 1`` (both learnable, as
in the HC paper) and gates ``s_alpha = s_beta = 0.01`` at init. No sums, no norm bound.
``W_alpha`` and ``w_beta`` run as one projection with the RMSNorm folded in (``project_rms``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import HyperConnection, Mixing
from .inference import InferenceMixing
from .ops import project_rms
from .streams import compute_dtype, float32_region, token_view
from .validation import check_positive_number


class HC(HyperConnection):
    kind = "hc"
    invariants = ()  # H_res is free

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(num_streams, dim, layer_index, recompute, backend)
        eps = check_positive_number("hc: eps", eps)
        n = num_streams
        self.eps = eps
        self.norm_weight = nn.Parameter(torch.empty(dim))
        self.alpha_proj = nn.Parameter(torch.empty(dim, n + 1))
        # the gates are 1-element vectors, not 0-d scalars: FSDP2 shards every parameter along dim 0
        self.alpha_gate = nn.Parameter(torch.empty(1))
        self.alpha_static = nn.Parameter(torch.empty(n, n + 1))
        self.beta_proj = nn.Parameter(torch.empty(dim))
        self.beta_gate = nn.Parameter(torch.empty(1))
        self.beta_static = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    def initial_res(self) -> torch.Tensor:
        """``I``: the static ``H_res`` at init, the dynamic part ``tanh(x~ @ 0) = 0``."""
        return torch.eye(self.num_streams, dtype=torch.float64)

    def reset_parameters(self) -> None:
        n = self.num_streams
        alpha_static = torch.zeros(n, n + 1)
        alpha_static[self.layer_index % n, 0] = 1.0
        alpha_static[:, 1:] = torch.eye(n)
        with torch.no_grad():
            self.norm_weight.fill_(1.0)
            self.alpha_proj.zero_()
            self.alpha_gate.fill_(0.01)
            self.alpha_static.copy_(alpha_static)
            self.beta_proj.zero_()
            self.beta_gate.fill_(0.01)
            self.beta_static.fill_(1.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the gates became 1-element vectors hold 0-d gates
        for name in ("alpha_gate", "beta_gate"):
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 0:
                state_dict[prefix + name] = value.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mixing(self, streams: torch.Tensor) -> Mixing:
        self.check_streams(streams)
        dt = compute_dtype(streams)
        n = self.num_streams
        with float32_region(streams):
            # RMSNorm(x_i) @ [W_alpha | w_beta] as one projection with the norm folded in
            weight = self.norm_weight.to(dt).unsqueeze(-1) * torch.cat(
                [self.alpha_proj.to(dt), self.beta_proj.to(dt).unsqueeze(-1)], dim=-1
            )
            dynamic = torch.tanh(project_rms(streams, weight, self.eps))  # (..., n, n + 2)
            alpha = self.alpha_static.to(dt) + self.alpha_gate.to(dt) * dynamic[..., : n + 1]
            post = self.beta_static.to(dt) + self.beta_gate.to(dt) * dynamic[..., n + 1]
        return Mixing(alpha[..., 0], alpha[..., 1:], post)

    # --- the gradient-free path (decode) -----------------------------------------------------
    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The folded projection ``sqrt(C) g [W_alpha | w_beta]`` (C, n + 2), the statics
        ``[alpha_static | beta_static]`` (n, n + 2), the gates per column (n + 2) and
        ``sqrt(C eps)`` (:meth:`CoefficientConnection.inference_coefficients`)."""
        n, c = self.num_streams, self.dim
        weight = (self.norm_weight.to(dtype) * math.sqrt(c)).unsqueeze(-1) * torch.cat(
            [self.alpha_proj.to(dtype), self.beta_proj.to(dtype).unsqueeze(-1)], dim=-1
        )
        static = torch.cat([self.alpha_static.to(dtype), self.beta_static.to(dtype).unsqueeze(-1)], dim=-1)
        gates = torch.cat([self.alpha_gate.to(dtype).expand(n + 1), self.beta_gate.to(dtype).reshape(1)])
        root_eps = torch.tensor(math.sqrt(c * self.eps), dtype=dtype, device=weight.device)
        return {"weight": weight, "static": static, "gates": gates, "root_eps": root_eps}

    def inference_mixing(self, streams: torch.Tensor) -> InferenceMixing:
        # coef (tokens, n, n + 2) holds [H_pre | H_res | H_post] row by row, so its transpose is
        # the GEMM matrix [H_pre; H_res^T; H_post] (the last row rides along)
        if not self.exact_kind:
            return super().inference_mixing(streams)
        n, c = self.num_streams, self.dim
        consts = self.cached_inference_constants(compute_dtype(streams), streams.device)
        x = streams.reshape(-1, c)
        if x.dtype != consts["weight"].dtype:
            x = x.to(consts["weight"].dtype)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        dynamic = torch.tanh(torch.div(x @ consts["weight"], torch.hypot(norm, consts["root_eps"])))
        coef = torch.addcmul(consts["static"], dynamic.view(-1, n, n + 2), consts["gates"])
        post = token_view(coef, tuple(streams.shape[:-2]), (n, 1), (n + 2, 1), n + 1)
        return InferenceMixing(coef.transpose(1, 2), post)
