"""``convert``: turn a Hugging Face Llama-family causal LM into a hyper-connected one, in place.

Every decoder layer becomes a :class:`~hyperconn.hf.layer.HyperDecoderLayer` with two connections of
the chosen kind (``layer_index`` = the layer's index), the streams are expanded before the first
layer and reduced before the final norm; ``stream_dtype="bfloat16"`` keeps them in bf16 between
the sublayers (the coefficients stay float32, the logits in the model's dtype). The settings go
into ``model.config.hyperconn`` (a plain dict, written by ``save_pretrained`` into ``config.json``)
so :func:`hyperconn.hf.load` can rebuild the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..connections import HyperConnection, make_connection
from ..diagnostics.deepseek_v4 import is_deepseek_v4
from ..model.config import STREAM_DTYPES, ConnectionConfig, check_connection, connection_validated
from .init import preservation_error, preserve_function_
from .layer import HyperDecoderLayer

# causal LMs whose decoder layer is exactly h = x + attn(ln1(x)); h = h + mlp(ln2(h)) under the
# names input_layernorm / self_attn / post_attention_layernorm / mlp, with model.model.layers and
# model.model.norm; each one is tested (tests/hf: every kind, generate, save/load). Left out
# although their layer reads the same in transformers 5.x: the MoE families (Qwen2-MoE, Qwen3-MoE,
# DeepSeek-V3, ...), whose MLP returned (hidden, router_logits) tuples in 4.x
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "GlmForCausalLM",
    "HeliumForCausalLM",
    "MinistralForCausalLM",
    "OlmoForCausalLM",
    "SeedOssForCausalLM",
    "SmolLM3ForCausalLM",
    "Starcoder2ForCausalLM",
)
INITS = ("preserve", "paper")
DEFAULT_STREAM_DTYPE = "float32"  # of STREAM_DTYPES: the streams stay in the model's own dtype
CONFIG_KEY = "hyperconn"
LEGACY_CONFIG_KEYS = ("shc",)  # written before the rename (hyperconn was called shc)
CONFIG_VERSION = 1
_LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
# preserve_function_ sets these conditions to rounding; a larger error means a connection class
# changed in a way the init does not know about
_PRESERVATION_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ConversionConfig:
    """What ``convert`` did: the connection ``kind``, ``num_streams``, its ``options``, ``init``
    and ``stream_dtype``.

    ``(kind, num_streams, options)`` is the triple of :class:`hyperconn.model.ConnectionConfig`,
    checked by the same function (:func:`hyperconn.model.config.check_connection`);
    :meth:`of` makes one from a ``ConnectionConfig``. ``init="preserve"`` (function-preserving,
    mean over streams) or ``"paper"`` (the connections' own from-scratch init, sum over streams).
    ``stream_dtype`` is the word of :attr:`hyperconn.model.ModelConfig.stream_dtype`, one of
    :data:`hyperconn.model.config.STREAM_DTYPES`: ``"float32"`` (default) leaves the streams in the
    dtype the model computes in, as before the option existed; ``"bfloat16"`` keeps them in bf16
    between the sublayers (:class:`~hyperconn.hf.layer.HyperDecoderLayer`).
    The JSON layout (``to_dict``: kind, num_streams, init, options, version) is the one every
    earlier release wrote and read; ``stream_dtype`` joins it only when it is not ``"float32"``,
    so a release that does not know the option refuses such an entry by name instead of
    silently computing in another precision."""

    kind: str = "shc"
    num_streams: int = 4
    init: str = "preserve"
    options: dict[str, Any] = field(default_factory=dict)
    version: int = CONFIG_VERSION
    stream_dtype: str = DEFAULT_STREAM_DTYPE

    @classmethod
    def of(
        cls, connection: ConnectionConfig, init: str = "preserve", stream_dtype: str = DEFAULT_STREAM_DTYPE
    ) -> ConversionConfig:
        """The conversion to ``connection``'s kind, stream count and options (a ``connection``
        already validated and unchanged since is not checked again) with ``stream_dtype``
        (``ModelConfig.stream_dtype``)."""
        spec = cls(connection.kind, connection.num_streams, init, dict(connection.options), stream_dtype=stream_dtype)
        return spec._check(triple=False) if connection_validated(connection) else spec

    @property
    def connection(self) -> ConnectionConfig:
        """The triple as a :class:`hyperconn.model.ConnectionConfig`."""
        return ConnectionConfig(self.kind, self.num_streams, dict(self.options))

    @property
    def stream_reduction(self) -> str:
        return "mean" if self.init == "preserve" else "sum"

    @property
    def stream_torch_dtype(self) -> torch.dtype | None:
        """The dtype the streams are cast to between sublayers, ``None`` to leave them as they come."""
        return None if self.stream_dtype == DEFAULT_STREAM_DTYPE else getattr(torch, self.stream_dtype)

    def validate(self) -> ConversionConfig:
        """Check once: a second call on an unchanged config returns at once."""
        if getattr(self, "_validated", None) == repr(asdict(self)):
            return self
        return self._check(triple=True)

    def _check(self, triple: bool) -> ConversionConfig:
        snapshot = repr(asdict(self))
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.stream_dtype, str) or self.stream_dtype not in STREAM_DTYPES:
            raise ValueError(f"stream_dtype must be one of {', '.join(STREAM_DTYPES)}, got {self.stream_dtype!r}")
        if self.version != CONFIG_VERSION:
            raise ValueError(
                f"config entry {CONFIG_KEY!r} has version {self.version}; this hyperconn reads {CONFIG_VERSION}"
            )
        try:
            json.dumps(self.options)
        except TypeError as err:
            raise ValueError(f"connection options must be JSON values (they go into config.json): {err}") from err
        if triple:
            check_connection(self.kind, self.num_streams, self.options)
        object.__setattr__(self, "_validated", snapshot)  # frozen: the fields, not this note, are fixed
        return self

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` entry: every field, ``stream_dtype`` only when it is not ``"float32"``."""
        entry = asdict(self)
        if entry["stream_dtype"] == DEFAULT_STREAM_DTYPE:
            del entry["stream_dtype"]
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ConversionConfig:
        """The entry as written to ``config.json`` (also under the legacy key ``shc``); checked by
        :meth:`validate` where it is applied (:func:`apply_conversion`)."""
        if not isinstance(entry, dict):
            raise ValueError(f"config entry {CONFIG_KEY!r} must be a mapping, got {type(entry).__name__}")
        known = {"kind", "num_streams", "init", "options", "version", "stream_dtype"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"config entry {CONFIG_KEY!r}: unknown field(s) {', '.join(unknown)}")
        return cls(**entry)


def check_supported(model: nn.Module) -> None:
    """Raise ``ValueError`` unless ``model`` is one of :data:`SUPPORTED_ARCHITECTURES` with the
    expected layout."""
    name = type(model).__name__
    if is_deepseek_v4(model):
        raise ValueError(
            f"{name} already has hyper-connections (DeepSeek-V4's mHC, a DeepseekV4HyperConnection before "
            "each attention and MoE block): there is nothing to convert. To read its mixing matrices run "
            "`hyperconn analyze --hf DIR --text FILE`, or record them with hyperconn.diagnostics.MixingRecorder"
        )
    if name not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"hyperconn.hf.convert does not support {name}; "
            f"supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    decoder = getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or not hasattr(decoder, "norm"):
        raise ValueError(f"{name}: expected model.model.layers (non-empty) and model.model.norm")
    if any(isinstance(layer, HyperDecoderLayer) for layer in layers):
        raise ValueError(f"{name} is already converted (model.config.{CONFIG_KEY} = {conversion_of(model)})")
    if len(layers) != model.config.num_hidden_layers:
        expected = model.config.num_hidden_layers
        raise ValueError(f"{name}: {len(layers)} decoder layers but config.num_hidden_layers = {expected}")
    for i, layer in enumerate(layers):
        missing = [part for part in _LAYER_PARTS if not hasattr(layer, part)]
        if missing:
            raise ValueError(f"{name}: decoder layer {i} ({type(layer).__name__}) has no {', '.join(missing)}")


def convert(
    model: nn.Module,
    kind: str = "shc",
    num_streams: int = 4,
    *,
    init: str = "preserve",
    stream_dtype: str = DEFAULT_STREAM_DTYPE,
    **connection_options,
) -> nn.Module:
    """Replace every decoder layer's two residual additions of ``model`` (in place) by
    hyper-connections of ``kind`` over ``num_streams`` streams and return ``model``.

    ``init="preserve"`` (default): the converted model computes the same logits as before (see
    :mod:`hyperconn.hf.init`); ``"paper"``: the connections' from-scratch init and a sum over streams,
    as in the paper (not function-preserving). ``stream_dtype="bfloat16"`` keeps the ``n`` streams
    in bf16 between the sublayers while every connection's coefficients are computed in float32
    (``"float32"``, the default: the streams stay in the model's dtype; see
    :class:`~hyperconn.hf.layer.HyperDecoderLayer`). ``connection_options`` go to
    :func:`hyperconn.make_connection` (``sigma_bias``, ``sinkhorn_iters``, ``eps``, ``recompute``...).
    Connection parameters are float32 on their layer's device whatever the model's dtype.
    Everything is checked before the model is touched."""
    spec = ConversionConfig(kind, num_streams, init, dict(connection_options), stream_dtype=stream_dtype)
    return apply_conversion(model, spec)


def apply_conversion(model: nn.Module, spec: ConversionConfig, initialise: bool = True) -> nn.Module:
    """:func:`convert` with a :class:`ConversionConfig`. ``initialise=False`` skips the
    function-preserving rewrite (for a model whose connection tensors are loaded next)."""
    check_supported(model)
    spec.validate()
    decoder = model.model
    dim = model.config.hidden_size
    last = len(decoder.layers) - 1
    converted = []
    for i, layer in enumerate(decoder.layers):
        # each layer's connections live where its weights are (device_map may spread the layers)
        device = next(layer.parameters(), decoder.embed_tokens.weight).device
        pair = [make_connection(spec.kind, spec.num_streams, dim, i, **spec.options).to(device) for _ in range(2)]
        if initialise and spec.init == "preserve":
            for conn in pair:
                preserve_function_(conn)
                error = preservation_error(conn)
                if error > _PRESERVATION_TOLERANCE:
                    raise RuntimeError(
                        f"{spec.kind} connection of layer {i}: function-preserving init is off by {error:.2e}"
                    )
        wrapped = HyperDecoderLayer(
            layer,
            *pair,
            expand_input=i == 0,
            reduce_output=i == last,
            stream_reduction=spec.stream_reduction,
            stream_dtype=spec.stream_torch_dtype,
        )
        # keep gradient checkpointing on if it was enabled before the conversion
        wrapped.gradient_checkpointing = getattr(layer, "gradient_checkpointing", False)
        if hasattr(layer, "_gradient_checkpointing_func"):
            wrapped._gradient_checkpointing_func = layer._gradient_checkpointing_func
        converted.append(wrapped)
    for i, wrapped in enumerate(converted):
        decoder.layers[i] = wrapped
    setattr(model.config, CONFIG_KEY, spec.to_dict())
    return model


def conversion_of(model: nn.Module) -> ConversionConfig | None:
    """The :class:`ConversionConfig` recorded in ``model.config``, or ``None`` for a plain model."""
    entry = conversion_entry(getattr(model, "config", None))
    return None if entry is None else ConversionConfig.from_dict(entry)


def conversion_entry(config: Any) -> Any:
    """The conversion entry of an HF config: ``config.hyperconn``, or the key written before the
    rename (``config.shc``); ``None`` for an unconverted config."""
    for key in (CONFIG_KEY, *LEGACY_CONFIG_KEYS):
        entry = getattr(config, key, None)
        if entry is not None:
            return entry
    return None


def hyper_connections(model: nn.Module) -> list[HyperConnection]:
    """The model's connection modules in the order they are applied (2 per decoder layer)."""
    return [m for m in model.modules() if isinstance(m, HyperConnection)]
