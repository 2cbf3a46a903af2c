"""A decoder-only language model (Qwen3 style) whose residual stream is a hyper-connection.

Wiring (docs/design.md, "The model")::

    x = expand(embed(idx))                                  (B, T, n, C); copy, or x_i = g_i h + b_i
    for block l:  x = attn_conn_l(x, u -> Attn(Norm(u)))    both connections: layer_index = l
                  x = mlp_conn_l(x,  u -> MLP(Norm(u)))
    logits = head(Norm(readout(x)))                         sum over the streams, or sum_j w_j x_j

``model.stream_dtype="bfloat16"`` keeps ``x`` in bf16 between sublayers (cast once after expand,
back to the parameters' dtype after readout); the connections' coefficient math stays float32.

The ends are ``model.connection.expand`` / ``readout`` (:mod:`hyperconn.model.ends`). With
``skip_inert`` the first and/or last connection is built without ``H_res`` where it provably has
no effect (:meth:`ConnectionConfig.inert_ends`). Connections are called as modules
(``conn(x, branch)``) so forward-pre-hooks on them see the streams. ``residual`` with one stream
is the plain pre-norm transformer. ``model.connection.num_fracs = m > 1`` (frac-connections) keeps
``x`` as ``(B, T, m, C/m)``, a view of ``(B, T, C)``: expand and readout are reshapes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..connections import FracConnection, HyperConnection, frozen_parameters, make_connection
from .config import ModelConfig
from .ends import FracMerge, FracSplit, StreamEnd, make_expand, make_readout
from .kv_cache import KVCache, LayerKVCache
from .layers import Attention, RotaryEmbedding, SwiGLU
from .norm import RMSNorm
from .sampling import check_sampling, sample


class Block(nn.Module):
    """Attention and MLP sublayers, each inside its own hyper-connection.

    ``attn_mixes`` / ``mlp_mixes`` False builds that connection without ``H_res``
    (``mix_streams=False``); the model decides (:meth:`ConnectionConfig.inert_ends`)."""

    def __init__(self, cfg: ModelConfig, layer_index: int, attn_mixes: bool = True, mlp_mixes: bool = True) -> None:
        super().__init__()
        conn = cfg.connection
        self.attn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_dim)
        attn_opts = conn.options if attn_mixes else {**conn.options, "mix_streams": False}
        mlp_opts = conn.options if mlp_mixes else {**conn.options, "mix_streams": False}
        fracs = conn.num_fracs  # > 1: frac-connections (hyperconn.connections.frac)
        n = conn.num_streams
        self.attn_conn = make_connection(conn.kind, n, cfg.dim, layer_index, num_fracs=fracs, **attn_opts)
        self.mlp_conn = make_connection(conn.kind, n, cfg.dim, layer_index, num_fracs=fracs, **mlp_opts)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding, start: int = 0, cache: LayerKVCache | None = None
    ) -> torch.Tensor:
        x = self.attn_conn(x, lambda u: self.attn(_branch_input(self.attn_norm, u), rope, start, cache))
        return self.mlp_conn(x, lambda u: self.mlp(_branch_input(self.mlp_norm, u)))


def _branch_input(norm: RMSNorm, u: torch.Tensor) -> torch.Tensor:
    """``Norm(u)`` in the parameters' dtype when autocast is off: with bf16 streams
    (``model.stream_dtype``) ``u`` is bf16, and an fp32 sublayer needs fp32 input (under autocast
    the sublayer's GEMMs cast it themselves)."""
    h = norm(u)
    weight = norm.weight
    if weight is not None and h.dtype != weight.dtype and not torch.is_autocast_enabled(h.device.type):
        h = h.to(weight.dtype)
    return h


class LanguageModel(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is unset: take it from the tokenizer before building the model")
        self.cfg = cfg
        self.num_streams = cfg.connection.num_streams
        self.stream_dtype = None if cfg.stream_dtype == "float32" else getattr(torch, cfg.stream_dtype)
        conn = cfg.connection
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        fracs = conn.num_fracs  # frac-connections: the ends are views (split and concatenate)
        self.expand = make_expand(conn.expand, self.num_streams, cfg.dim) if fracs == 1 else FracSplit(fracs)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        first, last = conn.inert_ends()
        last_layer = cfg.n_layers - 1
        self.blocks = nn.ModuleList(
            Block(cfg, i, attn_mixes=not (first and i == 0), mlp_mixes=not (last and i == last_layer))
            for i in range(cfg.n_layers)
        )
        self.readout = make_readout(conn.readout, self.num_streams) if fracs == 1 else FracMerge()
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02), output projections scaled by ``1/sqrt(2 L)``; norms to one;
        every hyper-connection and the rotary tables to their own initial values.

        Also the second half of deferred initialisation: build under ``torch.device("meta")``,
        shard or move with ``to_empty(device=...)``, then call this."""
        out_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = out_std if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, HyperConnection | StreamEnd | FracConnection):
                module.reset_parameters()
        self.rope.reset_parameters()

    def connections(self) -> list[nn.Module]:
        """The hyper-connection modules in the order they are applied."""
        return [c for b in self.blocks for c in (b.attn_conn, b.mlp_conn)]

    def non_embedding_parameters(self) -> int:
        """Parameters outside the token embedding and the LM head (counted once if tied)."""
        skip = {id(self.embed.weight), id(self.head.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def forward(self, idx: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        T = idx.shape[-1]
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}")
        x = self.expand(self.embed(idx))
        if self.stream_dtype is not None:
            x = x.to(self.stream_dtype)  # the streams between sublayers (model.stream_dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rope, start, None if cache is None else cache[i])
        y = self.readout(x)
        if y.dtype != self.norm.weight.dtype:
            y = y.to(self.norm.weight.dtype)
        return self.head(self.norm(y))

    def new_cache(self, batch: int, dtype: torch.dtype | None = None) -> KVCache:
        cfg = self.cfg
        param = self.embed.weight
        layers = [
            LayerKVCache(batch, cfg.n_kv_heads, cfg.max_seq_len, cfg.head_dim, param.device, dtype or param.dtype)
            for _ in range(cfg.n_layers)
        ]
        return KVCache(layers)

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx (B, T)`` with a KV cache.

        ``temperature=0`` is greedy; ``top_k`` keeps the k most likely tokens. When the context
        reaches ``max_seq_len``, the cache is rebuilt from the last half of the window.
        Runs under ``torch.inference_mode`` (no version counters or view tracking: about 10% more
        tokens/s than ``no_grad`` at ``tiny`` on a CPU, docs/performance.md), so the returned
        tensor is an inference tensor: ``.clone()`` it outside the mode before an in-place write.
        The connections' parameter-derived tensors are built once for the call
        (:func:`hyperconn.connections.frozen_parameters`).
        """
        check_sampling(temperature, top_k)
        was_training = self.training
        self.eval()
        window = self.cfg.max_seq_len
        out = idx
        cache, pos, logits = None, 0, None
        with frozen_parameters(self):  # nothing writes the weights during the loop
            for _ in range(max_new_tokens):
                if cache is None or pos >= window:
                    context = out[:, -(window // 2 if pos >= window else window - 1) :]
                    cache = self.new_cache(out.shape[0])
                    logits = self(context, 0, cache)[:, -1]
                    pos = context.shape[1]
                next_id = sample(logits.float(), temperature, top_k, generator)
                out = torch.cat([out, next_id], dim=1)
                if pos < window:
                    logits = self(next_id, pos, cache)[:, -1]
                pos += 1
        self.train(was_training)
        return out
