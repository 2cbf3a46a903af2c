"""A Llama-family decoder layer whose two residual additions are hyper-connections.

The Hugging Face layer computes ``h = x + attn(ln1(x)); h = h + mlp(ln2(h))``. This module holds
the same four submodules under the same names (so the checkpoint's keys are unchanged) plus
``attn_conn`` and ``mlp_conn``, and computes::

    x = conn_attn(x, u -> attn(ln1(u)))
    x = conn_mlp(x,  u -> mlp(ln2(u)))

Between layers the hidden state is ``(B, T, n*C)``: HF's model code only reads its batch and
length (masks) and dtype/device (rotary), and passes it on untouched. The first layer expands
``(B, T, C)`` into ``n`` copies, the last reduces the streams back to ``(B, T, C)`` (mean or sum)
before the model's final norm.

``stream_dtype`` (``torch.bfloat16``; ``None``, the default, leaves the streams in the dtype they
come in, the model's): the recipe of the native model's ``model.stream_dtype``::

    x = expand(h).to(stream_dtype)                 first layer: cast once, after the expand
    u, mixed, H_post = width(x)                    coefficients in float32 (``compute_dtype``), u and
                                                   mixed in the streams' dtype
    F(u) = attn(ln1(u.to(d)))                      d: the dtype of the layer's own parameters
    x' = mixed + H_post * F(u)                     computed in float32, stored in the streams' dtype
    y = reduce(x.to(d))                            last layer: the streams back in the model's dtype

so between sublayers (and between layers, flattened ``(B, T, n*C)``) the streams are bf16, the
sublayers see their own dtype (under ``torch.autocast`` their GEMMs cast ``u`` themselves, and it
is passed on as it is), and the final norm, the head and the logits keep the model's dtype. The
call signature is the HF layer's: ``hidden_states`` then
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
        stream_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if stream_reduction not in STREAM_REDUCTIONS:
            raise ValueError(f"stream_reduction must be one of {STREAM_REDUCTIONS}, got {stream_reduction!r}")
        if stream_dtype is not None and not (isinstance(stream_dtype, torch.dtype) and stream_dtype.is_floating_point):
            raise ValueError(f"stream_dtype must be a floating-point torch.dtype or None, got {stream_dtype!r}")
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
        self.stream_dtype = stream_dtype
        for name in _CARRIED_ATTRIBUTES:
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))
        self.train(layer.training)

    def extra_repr(self) -> str:
        return (
            f"num_streams={self.num_streams}, expand_input={self.expand_input}, "
            f"reduce_output={self.reduce_output}, stream_reduction={self.stream_reduction!r}"
            + ("" if self.stream_dtype is None else f", stream_dtype={self.stream_dtype}")
        )

    def _streams(self, hidden_states: torch.Tensor) -> torch.Tensor:
        n, c = self.num_streams, self.hidden_size
        if self.expand_input:
            if hidden_states.shape[-1] != c:
                raise ValueError(f"first layer: expected hidden size {c}, got shape {tuple(hidden_states.shape)}")
            return expand_streams(self._to_stream_dtype(hidden_states), n)
        if hidden_states.shape[-1] != n * c:
            raise ValueError(
                f"expected streams flattened to n*C = {n}*{c} = {n * c} features, got shape "
                f"{tuple(hidden_states.shape)}"
            )
        return self._to_stream_dtype(hidden_states).unflatten(-1, (n, c))

    def _to_stream_dtype(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.stream_dtype
        return x if dtype is None or x.dtype == dtype else x.to(dtype)

    def _compute_dtype(self) -> torch.dtype | None:
        """The dtype the sublayers compute in (their first floating-point parameter's); ``None``
        when nothing needs casting (no ``stream_dtype``)."""
        if self.stream_dtype is None:
            return None
        for module in (self.self_attn, self.mlp):
            for p in module.parameters():
                if p.dtype.is_floating_point:
                    return p.dtype
        return None

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        streams = self._streams(hidden_states)
        dtype = self._compute_dtype()
        # under autocast the sublayers' GEMMs cast their inputs themselves
        branch_dtype = None if dtype is not None and torch.is_autocast_enabled(streams.device.type) else dtype

        def branch_input(u: torch.Tensor) -> torch.Tensor:
            return u if branch_dtype is None or u.dtype == branch_dtype else u.to(branch_dtype)

        def attention(u: torch.Tensor) -> torch.Tensor:
            out, _ = self.self_attn(hidden_states=self.input_layernorm(branch_input(u)), **kwargs)
            return out

        streams = self.attn_conn(streams, attention)
        streams = self.mlp_conn(streams, lambda u: self.mlp(self.post_attention_layernorm(branch_input(u))))
        recording = self._hidden_states_collector() is not None
        if not (self.reduce_output or recording):
            return streams.flatten(-2)
        # the readout: back in the model's dtype, then reduced
        readout = streams if dtype is None or streams.dtype == dtype else streams.to(dtype)
        reduced = readout.mean(dim=-2) if self.stream_reduction == "mean" else reduce_streams(readout)
        if recording:
            self._record_hidden_state(hidden_states, reduced)
        return reduced if self.reduce_output else streams.flatten(-2)

    @staticmethod
    def _hidden_states_collector() -> dict | None:
        """HF's output collector while ``hidden_states`` are being collected, else ``None``."""
        collected = _hf_collector.get() if _hf_collector is not None else None
        return collected if collected and "hidden_states" in collected else None

    def _record_hidden_state(self, layer_input: torch.Tensor, reduced: torch.Tensor) -> None:
        """Append this layer's ``(B, T, C)`` state to HF's ``hidden_states`` collector (the first layer
        its input first), honouring a selection of indices; nothing when none is being collected."""
        collected = self._hidden_states_collector()
        if collected is None:
            return
        states, selection = collected["hidden_states"], collected.get("_hidden_states_layers")
        for state in ([layer_input] if self.expand_input and not states else []) + [reduced]:
            states.append(state if selection is None or len(states) in selection else None)
