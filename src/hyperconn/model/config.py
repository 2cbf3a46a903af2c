"""Model configuration: the transformer's shape and the hyper-connection that wires it.

Both dataclasses are validated at the edge (``validate()``): a bad value raises ``ValueError``
naming the value and what is allowed, before anything is built or written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..connections import available_connections, connection_class, connection_options, connection_parameter_count
from .ends import EXPAND_MODES, READOUT_MODES


@dataclass
class ConnectionConfig:
    """Which hyper-connection wraps every sublayer: ``kind``, ``streams`` (n) and its ``options``;
    how the streams are made and read out; whether provably inert ``H_res`` are skipped.

    ``streams=None`` means the kind's natural default: 1 for ``residual``, 4 otherwise.
    ``expand``: ``"copy"`` (every stream a copy of the embedding) or ``"learned"``
    (``x_i = g_i h + b_i``); ``readout``: ``"sum"`` or ``"learned"`` (``y = sum_j w_j x_j``); both
    learned ends need ``streams >= 2`` (:mod:`hyperconn.model.ends`). ``skip_inert``: build the
    first connection without ``H_res`` when ``expand="copy"`` and the kind's columns sum to 1
    exactly, and the last one when ``readout="sum"`` and its rows do (:meth:`inert_ends`).
    """

    kind: str = "shc"
    streams: int | None = None
    options: dict = field(default_factory=dict)
    expand: str = "copy"
    readout: str = "sum"
    skip_inert: bool = True

    def __post_init__(self) -> None:
        if self.streams is None:
            self.streams = 1 if self.kind == "residual" else 4

    def validate(self) -> ConnectionConfig:
        kinds = available_connections()
        if self.kind not in kinds:
            raise ValueError(f"unknown connection kind {self.kind!r}; choose one of {', '.join(kinds)}")
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 1:
            raise ValueError(f"connection streams must be an integer >= 1, got {self.streams!r}")
        if self.kind == "residual" and self.streams != 1:
            raise ValueError(
                f"connection kind 'residual' is the plain transformer and needs streams=1, got {self.streams}"
            )
        if not isinstance(self.options, dict):
            raise ValueError(f"connection options must be a mapping, got {self.options!r}")
        if "mix_streams" in self.options:
            raise ValueError(
                "model.connection.options.mix_streams is set per connection by the model; "
                "use model.connection.skip_inert (true or false) instead"
            )
        if self.expand not in EXPAND_MODES:
            raise ValueError(f"model.connection.expand must be one of {', '.join(EXPAND_MODES)}, got {self.expand!r}")
        if self.readout not in READOUT_MODES:
            raise ValueError(
                f"model.connection.readout must be one of {', '.join(READOUT_MODES)}, got {self.readout!r}"
            )
        for name, value, plain in (("expand", self.expand, "copy"), ("readout", self.readout, "sum")):
            if value != plain and self.streams < 2:
                raise ValueError(
                    f"model.connection.{name}={value!r} needs a multi-stream connection (streams >= 2); "
                    f"{self.kind} with streams={self.streams} has one stream: use {name}={plain!r}"
                )
        if not isinstance(self.skip_inert, bool):
            raise ValueError(f"model.connection.skip_inert must be true or false, got {self.skip_inert!r}")
        # Build one connection on the meta device: the kind's own checks (n a power of two for
        # kromhc, n <= 8 for mhc_lite, unknown options, ...) fire here, at the edge.
        connection_parameter_count(self.kind, self.streams, 8, **self.options)
        return self

    def inert_ends(self) -> tuple[bool, bool]:
        """``(first, last)``: whether the first connection (layer 0, attention) and the last one
        (last layer, MLP) are built without ``H_res`` (``mix_streams=False``).

        With copy expansion the first connection sees ``n`` identical streams ``h``, and
        ``sum_i H[i, j] h = (1^T H)_j h``: its ``H_res`` acts only through its column sums. With
        the sum readout ``sum_j x'_j = sum_i (H 1)_i x_i + ...``: the last ``H_res`` acts only
        through its row sums. Where those sums are 1 exactly for the kind (declared by the class:
        ``res_columns_sum_to_one``, ``res_rows_sum_to_one``), that ``H_res`` equals ``I`` in effect
        and gets zero gradient, so it is skipped (``skip_inert``)."""
        if not self.skip_inert or self.streams < 2 or "mix_streams" not in connection_options(self.kind):
            return False, False
        cls = connection_class(self.kind)
        first = self.expand == "copy" and cls.res_columns_sum_to_one
        last = self.readout == "sum" and cls.res_rows_sum_to_one
        return first, last


STREAM_DTYPES = ("float32", "bfloat16")


@dataclass
class ModelConfig:
    """Shape of the decoder-only transformer (Qwen3 style).

    ``vocab_size=None`` takes the tokenizer's vocabulary size when the trainer builds the model.
    ``stream_dtype``: the dtype the ``n`` streams are kept in between sublayers, ``"float32"``
    (default) or ``"bfloat16"`` (half the bytes per pass over the streams; every connection's
    coefficient math still runs in float32, the DeepSeek-V4 recipe).
    """

    vocab_size: int | None = None
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    mlp_dim: int = 384
    max_seq_len: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    stream_dtype: str = "float32"
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.connection, dict):
            self.connection = ConnectionConfig(**self.connection)

    def validate(self) -> ModelConfig:
        positive = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_dim", "max_seq_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be an integer >= 1, got {value!r}")
        if self.vocab_size is not None and (not isinstance(self.vocab_size, int) or self.vocab_size < 1):
            raise ValueError(f"model.vocab_size must be an integer >= 1 or null, got {self.vocab_size!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"model.head_dim must be even for RoPE, got {self.head_dim}")
        if self.stream_dtype not in STREAM_DTYPES:
            raise ValueError(f"model.stream_dtype must be one of {', '.join(STREAM_DTYPES)}, got {self.stream_dtype!r}")
        if not self.rope_base > 0:
            raise ValueError(f"model.rope_base must be > 0, got {self.rope_base!r}")
        self.connection.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**data)
