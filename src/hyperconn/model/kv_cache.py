"""Key/value cache for incremental decoding.

Hyper-connections mix streams per token, so only attention needs the past: the same cache
serves the plain and the hyper-connected model.
"""

from __future__ import annotations

import torch


class LayerKVCache:
    """Preallocated keys and values ``(B, kv_heads, max_len, head_dim)`` of one attention layer."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, device, dtype) -> None:
        self.k = torch.zeros(batch, kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write positions ``start .. start + T - 1``; return keys and values ``0 .. start + T - 1``."""
        end = start + k.shape[-2]
        if end > self.k.shape[-2]:
            raise ValueError(f"KV cache holds {self.k.shape[-2]} positions, asked to write up to {end}")
        self.k[:, :, start:end] = k.to(self.k.dtype)
        self.v[:, :, start:end] = v.to(self.v.dtype)
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """One :class:`LayerKVCache` per block."""

    def __init__(self, layers: list[LayerKVCache]) -> None:
        self.layers = layers

    def __getitem__(self, index: int) -> LayerKVCache:
        return self.layers[index]
