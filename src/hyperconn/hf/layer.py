"""A Llama-family decoder layer whose two residual additions are hyper-connections.

The Hugging Face layer computes ``h = x + attn(ln1(x)); h = h + mlp(ln2(h))``. This module holds
the same four submodules under the same names (so the checkpoint's keys are unchanged) plus
``attn_conn`` and ``mlp_conn``, and computes::

    x = conn_attn(x, u -> attn(ln1(u)))
    x = conn_mlp(x,  u -> mlp(ln2(u)))

Between layers the hidden state is ``(B, T, n*C)``: HF's model code only reads its batch and
length (masks) and dtype/device (rotary), and passes it on untouched. The first layer expands
``(B, T, C)`` into ``n`` copies, the last reduces the streams back to ``(B, T, C)`` (mean or sum)
before the model's final norm. The call signature is the HF layer's: ``hidden_states`` then
keywords (mask, positions, cache, rotary embeddings, ...), all handed to ``self_attn`` as the
original layer does, so the KV cache, ``generate`` and gradient checkpointing
(``GradientCheckpointingLayer``) work unchanged.

``output_hidden_states=True``: HF records the outputs of its own decoder-layer class, which these
layers are not, so each layer records itself into HF's collector: the first layer its input
``(B, T, C)`` (the embeddings), every layer its output with the streams reduced to ``(B, T, C)``
the way the last layer reduces them for the readout (``stream_reduction``: the mean over the ``n``
streams, or their sum). The model then replaces the last entry by the normed ``last_hidden_state``,
as for the unconverted model: ``num_hidden_layers + 1`` states in all, each ``(B, T, C)``.
"""

from __future__ import annotations

import torch
from packaging import version as _version
from torch import nn

from .._optional import require
from ..connections import HyperConnection, expand_streams, reduce_streams

_transformers = require("transformers", "hyperconn.hf")
# 4.54 is the first release whose decoder layers return a tensor (not a tuple) and that has
# GradientCheckpointingLayer; older ones would misread this layer's output
MIN_TRANSFORMERS = "4.54"
if _version.Version(_transformers.__version__) < _version.Version(MIN_TRANSFORMERS):
    raise ImportError(f"hyperconn.hf needs transformers >= {MIN_TRANSFORMERS}, found {_transformers.__version__}")
_modeling_layers = require("transformers.modeling_layers", "hyperconn.hf")
try:  # the collector HF's ``capture_outputs`` fills while ``output_hidden_states`` is requested
    from transformers.utils.output_capturing import _active_collector as _hf_collector
except ImportError:  # older releases collect inside the model's own loop
    _hf_collector = None

STREAM_REDUCTIONS = ("mean", "sum")
# attributes HF model code reads from decoder layers in some families (kept on the wrapper)
_CARRIED_ATTRIBUTES = ("attention_type", "layer_idx")


class HyperDecoderLayer(_modeling_layers.GradientCheckpointingLayer):
    """One decoder layer of a converted model. ``expand_input``: the first layer (its input is
    ``(B, T, C)``); ``reduce_output``: the last layer (returns ``(B, T, C)``). ``attn_conn`` and
    ``mlp_conn`` share ``num_streams`` and ``dim``: :func:`hyperconn.hf.convert.apply_conversion`
    builds both from one validated :class:`~hyperconn.hf.ConversionConfig`."""

    def __init__(
        self,
        layer: nn.Module,
        attn_conn: HyperConnection,
        mlp_conn: HyperConnection,
        *,
        expand_input: bool,
        reduce_output: bool,
        stream_reduction: str,
    ) -> None:
        super().__init__()
        if stream_reduction not in STREAM_REDUCTIONS:
            raise ValueError(f"stream_reduction must be one of {STREAM_REDUCTIONS}, got {stream_reduction!r}")
        self.input_layernorm = layer.input_layernorm
        self.self_attn = layer.self_attn
        self.post_attention_layernorm = layer.post_attention_layernorm
        self.mlp = layer.mlp
        self.attn_conn = attn_conn
        self.mlp_conn = mlp_conn
        self.num_streams = attn_conn.num_streams
        self.hidden_size = attn_conn.dim
        self.expand_input = expand_input
        self.reduce_output = reduce_output
        self.stream_reduction = stream_reduction
        for name in _CARRIED_ATTRIBUTES:
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))
        self.train(layer.training)

    def extra_repr(self) -> str:
        return (
            f"num_streams={self.num_streams}, expand_input={self.expand_input}, "
            f"reduce_output={self.reduce_output}, stream_reduction={self.stream_reduction!r}"
        )

    def _streams(self, hidden_states: torch.Tensor) -> torch.Tensor:
        n, c = self.num_streams, self.hidden_size
        if self.expand_input:
            if hidden_states.shape[-1] != c:
                raise ValueError(f"first layer: expected hidden size {c}, got shape {tuple(hidden_states.shape)}")
            return expand_streams(hidden_states, n)
        if hidden_states.shape[-1] != n * c:
            raise ValueError(
                f"expected streams flattened to n*C = {n}*{c} = {n * c} features, got shape "
                f"{tuple(hidden_states.shape)}"
            )
        return hidden_states.unflatten(-1, (n, c))

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        streams = self._streams(hidden_states)

        def attention(u: torch.Tensor) -> torch.Tensor:
            out, _ = self.self_attn(hidden_states=self.input_layernorm(u), **kwargs)
            return out

        streams = self.attn_conn(streams, attention)
        streams = self.mlp_conn(streams, lambda u: self.mlp(self.post_attention_layernorm(u)))
        reduced = streams.mean(dim=-2) if self.stream_reduction == "mean" else reduce_streams(streams)
        self._record_hidden_state(hidden_states, reduced)
        return reduced if self.reduce_output else streams.flatten(-2)

    def _record_hidden_state(self, layer_input: torch.Tensor, reduced: torch.Tensor) -> None:
        """Append this layer's ``(B, T, C)`` state to HF's ``hidden_states`` collector (the first layer
        its input first), honouring a selection of indices; nothing when none is being collected."""
        collected = _hf_collector.get() if _hf_collector is not None else None
        if not collected or "hidden_states" not in collected:
            return
        states, selection = collected["hidden_states"], collected.get("_hidden_states_layers")
        for state in ([layer_input] if self.expand_input and not states else []) + [reduced]:
            states.append(state if selection is None or len(states) in selection else None)
