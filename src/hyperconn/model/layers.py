"""The transformer's sublayers: rotary embedding, grouped-query attention with QK-norm, SwiGLU MLP.

Each sublayer is a branch ``F`` of a hyper-connection; its pre-norm lives inside it
(``F(u) = Attn(Norm(u))``, docs/design.md, "The model").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import LayerKVCache
from .norm import RMSNorm


class RotaryEmbedding(nn.Module):
    """RoPE: rotate channel pairs ``(x_i, x_{i+d/2})`` by angle ``pos * base^(-2i/d)``."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.max_seq_len, self.base = head_dim, max_seq_len, base
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim)
        device = self.cos.device if self.cos.device.type != "meta" else None
        self.cos = angles.cos().float().to(device)
        self.sin = angles.sin().float().to(device)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``x`` (B, heads, T, head_dim) at positions ``start .. start + T - 1``."""
        T = x.shape[-2]
        cos = self.cos[start : start + T].to(x.dtype)
        sin = self.sin[start : start + T].to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    """Causal grouped-query attention with RMS-normalised queries and keys (Qwen3)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=eps)
        self.k_norm = RMSNorm(head_dim, eps=eps)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding, start: int = 0, cache: LayerKVCache | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rope(q, start), rope(k, start)
        mask, causal = None, True
        if cache is not None:
            k, v = cache.update(k, v, start)
            if start > 0:
                # queries at positions start..start+T-1 see keys 0..start+t
                causal = False
                if T > 1:
                    q_pos = torch.arange(start, start + T, device=x.device)[:, None]
                    mask = torch.arange(k.shape[-2], device=x.device)[None, :] <= q_pos
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    """``W_down (silu(W_gate x) * W_up x)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
