"""Model configuration: the transformer's shape and the hyper-connection that wires it.

Both dataclasses are validated at the edge (``validate()``): a bad value raises ``ValueError``
naming the value and what is allowed, before anything is built or written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..connections import available_connections, connection_parameter_count


@dataclass
class ConnectionConfig:
    """Which hyper-connection wraps every sublayer: ``kind``, ``streams`` (n) and its ``options``.

    ``streams=None`` means the kind's natural default: 1 for ``residual``, 4 otherwise.
    """

    kind: str = "shc"
    streams: int | None = None
    options: dict = field(default_factory=dict)

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
        # Build one connection on the meta device: the kind's own checks (n a power of two for
        # kromhc, n <= 8 for mhc_lite, unknown options, ...) fire here, at the edge.
        connection_parameter_count(self.kind, self.streams, 8, **self.options)
        return self


@dataclass
class ModelConfig:
    """Shape of the decoder-only transformer (Qwen3 style).

    ``vocab_size=None`` takes the tokenizer's vocabulary size when the trainer builds the model.
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
