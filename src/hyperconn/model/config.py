"""Model configuration: the transformer's shape and the hyper-connection that wires it.

Both dataclasses are validated at the edge (``validate()``): a bad value raises ``ValueError``
naming the value and what is allowed, before anything is built or written. ``validate()`` checks
once: it remembers what it checked and returns at once while the config is unchanged, so the
config, the trainer and the model may each call it on the way config -> model at the cost of one
check.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields

from ..connections import connection_class, connection_options, connection_parameter_count, kind_spelling
from .ends import EXPAND_MODES, READOUT_MODES


def check_connection(kind: str, num_streams: int, options: dict) -> None:
    """The connection triple ``(kind, num_streams, options)`` is buildable: one connection is built
    on the meta device (nothing allocated), so the kind's own constructor checks are the only ones
    (an unknown kind; ``num_streams`` 1 for residual, an integer >= 2 otherwise, a power of two for
    kromhc, <= 8 for mhc_lite; unknown options and bad option values). Shared by
    :class:`ConnectionConfig` and :class:`hyperconn.hf.ConversionConfig`."""
    if not isinstance(options, dict):
        raise ValueError(f"connection options must be a mapping, got {options!r}")
    width = max(8, num_streams) if isinstance(num_streams, int) else 8  # n > width would warn of swapped arguments
    connection_parameter_count(kind, num_streams, width, **options)


def _snapshot(config, *leave_out: str) -> str:
    """What :meth:`validate` checked, compared on the next call (``repr`` tells ``True`` from ``1``)."""
    return repr({k: v for k, v in asdict(config).items() if k not in leave_out})


def connection_validated(config: ConnectionConfig) -> bool:
    """Whether ``config.validate()`` passed and the config has not changed since."""
    return getattr(config, "_validated", None) == _snapshot(config)


@dataclass(init=False)
class ConnectionConfig:
    """Which hyper-connection wraps every sublayer: ``kind``, ``num_streams`` (n) and its ``options``;
    how the streams are made and read out; whether provably inert ``H_res`` are skipped.

    ``num_streams=None`` means the kind's natural default: 1 for ``residual``, 4 otherwise
    (``streams=``, its old name, is still accepted with a ``DeprecationWarning``).
    ``expand``: ``"copy"`` (every stream a copy of the embedding) or ``"learned"``
    (``x_i = g_i h + b_i``); ``readout``: ``"sum"`` or ``"learned"`` (``y = sum_j w_j x_j``); both
    learned ends need ``num_streams >= 2`` (:mod:`hyperconn.model.ends`). ``skip_inert``: build the
    first connection without ``H_res`` when ``expand="copy"`` and the kind's columns sum to 1
    exactly, and the last one when ``readout="sum"`` and its rows do (:meth:`inert_ends`).
    ``num_fracs``: 1 (default), or ``m >= 2`` for frac-connections (:mod:`hyperconn.connections.frac`):
    the hidden state split into ``m`` fractions that ``kind`` mixes, no widening (``num_streams``
    is then 1, its default when ``num_fracs > 1``; ``model.dim`` divisible by ``m``).
    """

    kind: str = "shc"
    num_streams: int | None = None
    options: dict = field(default_factory=dict)
    expand: str = "copy"
    readout: str = "sum"
    skip_inert: bool = True
    num_fracs: int = 1

    def __init__(
        self,
        kind: str = "shc",
        num_streams: int | None = None,
        options: dict | None = None,
        expand: str = "copy",
        readout: str = "sum",
        skip_inert: bool = True,
        num_fracs: int = 1,
        *,
        streams: int | None = None,
    ) -> None:
        if streams is not None:
            warnings.warn("ConnectionConfig(streams=) is deprecated; use num_streams=", DeprecationWarning, 2)
            if num_streams is not None:
                raise ValueError("ConnectionConfig: give num_streams alone, not also streams (its old name)")
            num_streams = streams
        if num_streams is None:
            num_streams = 1 if kind == "residual" or num_fracs != 1 else 4
        self.kind, self.num_streams, self.options = kind, num_streams, {} if options is None else options
        self.expand, self.readout, self.skip_inert = expand, readout, skip_inert
        self.num_fracs = num_fracs

    @property
    def streams(self) -> int:
        """The old name of :attr:`num_streams`."""
        warnings.warn("ConnectionConfig.streams is deprecated; use num_streams", DeprecationWarning, 2)
        return self.num_streams

    def validate(self) -> ConnectionConfig:
        """Check once: a second call on an unchanged config returns at once."""
        if connection_validated(self):
            return self
        if isinstance(self.options, dict) and "mix_streams" in self.options:
            raise ValueError(
                "model.connection.options.mix_streams is set per connection by the model; "
                "use model.connection.skip_inert (true or false) instead, or model.connection.kind=identity "
                "for H_res = I in every connection"
            )
        if self.expand not in EXPAND_MODES:
            raise ValueError(f"model.connection.expand must be one of {', '.join(EXPAND_MODES)}, got {self.expand!r}")
        if self.readout not in READOUT_MODES:
            raise ValueError(
                f"model.connection.readout must be one of {', '.join(READOUT_MODES)}, got {self.readout!r}"
            )
        for name, value, plain in (("expand", self.expand, "copy"), ("readout", self.readout, "sum")):
            if value != plain and isinstance(self.num_streams, int) and self.num_streams < 2:
                raise ValueError(
                    f"model.connection.{name}={value!r} needs a multi-stream connection (num_streams >= 2); "
                    f"{self.kind} with num_streams={self.num_streams} has one stream: use {name}={plain!r}"
                )
        if not isinstance(self.skip_inert, bool):
            raise ValueError(f"model.connection.skip_inert must be true or false, got {self.skip_inert!r}")
        if self.num_fracs != 1:
            self._check_fracs()
        else:
            check_connection(self.kind, self.num_streams, self.options)
        # how another process finds the kind again (a run's config.yaml): a built-in or installed
        # entry-point name stays, a kind registered by a script becomes "module:Class"
        self.kind = kind_spelling(self.kind)
        self._validated = _snapshot(self)
        return self

    def _check_fracs(self) -> None:
        """Frac-connections: ``num_fracs`` an integer >= 2 with one stream (no widening), the kind
        buildable over ``num_fracs`` streams (its own checks: e.g. a power of two for kromhc)."""
        m = self.num_fracs
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"model.connection.num_fracs must be an integer >= 1, got {m!r}")
        if self.kind == "residual":
            raise ValueError(
                "model.connection.num_fracs > 1 needs a hyper-connection kind; residual has nothing to mix"
            )
        if self.num_streams != 1:
            raise ValueError(
                f"model.connection.num_fracs={m} splits the hidden state instead of widening it: "
                f"num_streams must be 1, got {self.num_streams!r} (set model.connection.num_streams=1)"
            )
        check_connection(self.kind, m, self.options)

    def inert_ends(self) -> tuple[bool, bool]:
        """``(first, last)``: whether the first connection (layer 0, attention) and the last one
        (last layer, MLP) are built without ``H_res`` (``mix_streams=False``).

        With copy expansion the first connection sees ``n`` identical streams ``h``, and
        ``sum_i H[i, j] h = (1^T H)_j h``: its ``H_res`` acts only through its column sums. With
        the sum readout ``sum_j x'_j = sum_i (H 1)_i x_i + ...``: the last ``H_res`` acts only
        through its row sums. Where those sums are 1 exactly for the kind (its declared invariants
        ``columns_sum_to_one``, ``rows_sum_to_one``), that ``H_res`` equals ``I`` in effect
        and gets zero gradient, so it is skipped (``skip_inert``)."""
        if not self.skip_inert or self.num_streams < 2 or "mix_streams" not in connection_options(self.kind):
            return False, False
        cls = connection_class(self.kind)
        first = self.expand == "copy" and cls.guarantees("columns_sum_to_one")
        last = self.readout == "sum" and cls.guarantees("rows_sum_to_one")
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
        """Check once: a second call on an unchanged config returns at once (the connection is
        checked by :meth:`ConnectionConfig.validate`, itself once)."""
        if self.vocab_size is not None and (not isinstance(self.vocab_size, int) or self.vocab_size < 1):
            raise ValueError(f"model.vocab_size must be an integer >= 1 or null, got {self.vocab_size!r}")
        snapshot = _snapshot(self, "vocab_size")  # the trainer fills vocab_size in between calls
        if getattr(self, "_validated", None) == snapshot:
            return self
        positive = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_dim", "max_seq_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be an integer >= 1, got {value!r}")
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
        fracs = self.connection.num_fracs
        if fracs != 1 and self.dim % fracs:
            raise ValueError(
                f"model.dim={self.dim} is not divisible by model.connection.num_fracs={fracs} "
                "(each fraction has width dim / num_fracs)"
            )
        self._validated = snapshot
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
