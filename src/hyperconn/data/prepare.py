"""``prepare_data``: source -> tokenizer -> token streams for training and evaluation.

Three paths, by ``DataConfig``: ``pipeline="cached"`` tokenises the source once into
``cache_dir`` (below); ``source="shards:<dir>"`` maps shards written by ``hyperconn data prepare``
(``shards.py``); ``pipeline="stream"`` tokenises each rank's training documents on the fly
(``streaming.py``) and only the validation head here.

Layout of ``cache_dir``::

    tokenizers/bpe-<key>/tokenizer.json     key = hash(source fingerprint, vocab size)
    tokens/<key>/{train.bin, val.bin, meta.json}
                                            key = hash(source fingerprint, tokenizer fingerprint)

Each document is encoded and followed by ``eos``; ids are stored as ``uint16`` when
``vocab_size <= 65536`` else ``uint32``. A token directory is written under a temporary name and
renamed into place when complete, so a reader never sees half a cache; the second call reuses it.

Bits per byte: ``val_bytes`` is the UTF-8 byte count of the validation documents, so a mean loss of
``L`` nats per validation token gives ``L * n_val_tokens / (val_bytes * ln 2)`` bits per byte, which
compares across tokenizers (the ``eos`` tokens are counted as tokens, their bytes are not).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .._optional import require
from ..fileio import staging_dir, write_json
from .batching import TokenBatcher
from .chunks import ENCODE_CHARS, chunk_documents
from .config import DataConfig, resolve_path, tokenizer_path
from .shards import BPE_COPY, open_shards, read_index
from .sources import ShardsSource, Source, TextSource, digest
from .streaming import STREAM_PREFETCH, StreamingBatcher, TrainStream, head_documents
from .tokenizers import BPETokenizer, ByteTokenizer, PretrainedTokenizer, Tokenizer, encode_documents, train_bpe

np = require("numpy", "hyperconn.data")

FORMAT_VERSION = 1


@dataclass
class PreparedData:
    """Token streams ready for training. ``train`` / ``val`` are read-only 1-D token arrays
    (memmaps, or ``ShardedTokens`` over shard files); ``train`` is None and ``stream`` set for the
    stream pipeline. ``train_batcher`` gives the right batcher for either."""

    tokenizer: Tokenizer
    train: np.ndarray | None
    val: np.ndarray
    val_bytes: int
    train_bytes: int = 0
    info: dict = field(default_factory=dict)  # counts, names, fingerprints, path
    stream: TrainStream | None = None

    def train_batcher(
        self,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        micro_steps: int = 1,
        prefetch: int = STREAM_PREFETCH,
    ) -> TokenBatcher | StreamingBatcher:
        """``.batch(step, micro) -> (x, y)`` for this rank; ``micro_steps`` = micro-batches per step;
        ``prefetch``: batches a stream tokenises ahead in a background thread."""
        if self.stream is not None:
            return StreamingBatcher(
                self.stream, self.tokenizer, seq_len, batch_size, seed, rank, world_size, micro_steps, prefetch=prefetch
            )
        return TokenBatcher(self.train, seq_len, batch_size, seed, rank, world_size)

    @property
    def n_val_tokens(self) -> int:
        return int(self.val.shape[0])

    def bits_per_byte(self, val_loss_nats: float) -> float:
        """``val_loss_nats * n_val_tokens / (val_bytes * ln 2)``."""
        return float(val_loss_nats) * self.n_val_tokens / (self.val_bytes * math.log(2))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _key(obj) -> str:
    return digest(obj)[:20]


def resolve_tokenizer(cfg: DataConfig, source: Source | None = None) -> Tokenizer:
    """The tokenizer ``cfg`` names; a ``bpe`` is trained on ``source``'s training split into the
    cache if absent (for a ``shards:`` source it is the copy the shards carry). ``source``: the
    parsed ``cfg.source`` (parsed here when None)."""
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer != "bpe":
        return PretrainedTokenizer(tokenizer_path(cfg.tokenizer))
    source = cfg.parsed_source() if source is None else source
    if isinstance(source, ShardsSource):
        path = source.path / BPE_COPY
        if not path.is_file():
            raise ValueError(f"tokenizer='bpe': the shards at {path.parent} were not tokenised with a trained BPE")
        return BPETokenizer(path, name=f"bpe-{cfg.bpe_vocab_size}")
    key = _key({"kind": "bpe", "version": 1, "vocab_size": cfg.bpe_vocab_size, "source": source.fingerprint()})
    path = resolve_path(cfg.cache_dir) / "tokenizers" / f"bpe-{cfg.bpe_vocab_size}-{key}" / "tokenizer.json"
    if path.exists():
        return BPETokenizer(path, name=f"bpe-{cfg.bpe_vocab_size}")
    return train_bpe(source.train_texts(), cfg.bpe_vocab_size, path)


def load_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer ``prepare_data(cfg)`` uses (a BPE comes from the same cache, trained if absent)."""
    return resolve_tokenizer(cfg, cfg.validate())


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Validate ``cfg``, get the tokenizer and the token streams (see the module doc): one dispatch
    on the parsed source and the pipeline."""
    source = cfg.validate()
    if isinstance(source, ShardsSource):
        return _shard_data(cfg, source)
    tok = resolve_tokenizer(cfg, source)
    if cfg.pipeline == "stream":
        return _stream_data(cfg, source, tok)
    return _cached_data(cfg, source, tok)


def _cached_data(cfg: DataConfig, source: TextSource, tok: Tokenizer) -> PreparedData:
    cache = resolve_path(cfg.cache_dir)
    key = _key({"format": FORMAT_VERSION, "source": source.fingerprint(), "tokenizer": tok.fingerprint})
    directory = cache / "tokens" / key
    if not (directory / "meta.json").exists():
        _write_tokens(directory, source, tok)
    meta = json.loads((directory / "meta.json").read_text())
    meta["path"] = str(directory)

    def open_split(split: str) -> np.ndarray:
        return np.memmap(directory / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(meta[f"{split}_tokens"],))

    train = open_split("train")
    if cfg.max_tokens is not None:
        train = train[: cfg.max_tokens]
    return PreparedData(tok, train, open_split("val"), meta["val_bytes"], meta["train_bytes"], meta)


def _shard_data(cfg: DataConfig, source: ShardsSource) -> PreparedData:
    directory = source.path
    index = read_index(directory)
    tok = resolve_tokenizer(cfg, source)
    if tok.fingerprint != index["tokenizer_fingerprint"]:
        raise ValueError(
            f"tokenizer={cfg.tokenizer!r} ({tok.name}, {tok.fingerprint[:12]}) is not the tokenizer the shards at "
            f"{directory} were written with ({index['tokenizer']}, {index['tokenizer_fingerprint'][:12]})"
        )
    index, train, val = open_shards(directory, cfg.max_tokens)
    info = {k: v for k, v in index.items() if k != "shards"}
    info.update(path=str(directory), train_tokens=len(train), n_shards=len(index["shards"]))
    return PreparedData(tok, train, val, index["val_bytes"], index["train_bytes"], info)


def _stream_data(cfg: DataConfig, source: TextSource, tok: Tokenizer) -> PreparedData:
    val, val_bytes, val_docs = head_documents(source.texts("val"), tok, cfg.stream_val_tokens)
    if val_bytes == 0:
        raise ValueError(f"{source.description}: the validation split is empty; use another val_fraction")
    stream = TrainStream(
        documents=source.train_texts,
        description=source.description,
        max_tokens=cfg.max_tokens,
        shuffle_windows=cfg.stream_shuffle_windows,
    )
    info = {
        "pipeline": "stream",
        "source": source.description,
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "val_tokens": int(val.size),
        "val_bytes": val_bytes,
        "val_documents": val_docs,
        "max_tokens": cfg.max_tokens,
    }
    return PreparedData(tok, None, val.astype(token_dtype(tok.vocab_size)), val_bytes, 0, info, stream)


def _write_tokens(directory: Path, source: TextSource, tok: Tokenizer) -> None:
    """Tokenise all documents into ``directory``, published whole (``fileio.staging_dir``: a temporary
    folder renamed into place); if a concurrent writer published it first, its folder is kept."""
    dtype = token_dtype(tok.vocab_size)
    counts = {f"{s}_{c}": 0 for s in ("train", "val") for c in ("tokens", "bytes", "documents")}
    with staging_dir(directory, replace=False) as tmp:
        files = {s: open(tmp / f"{s}.bin", "wb") for s in ("train", "val")}  # noqa: SIM115 - closed below
        try:

            def write(split: str, texts: list[str]) -> None:
                if not texts:
                    return
                ids = encode_documents(tok, texts)
                files[split].write(ids.astype(dtype).tobytes())
                counts[f"{split}_tokens"] += int(ids.size)
                counts[f"{split}_bytes"] += sum(len(t.encode("utf-8")) for t in texts)
                counts[f"{split}_documents"] += len(texts)

            for chunk in chunk_documents(source.documents(), ENCODE_CHARS, text=lambda doc: doc[1]):
                for split in ("train", "val"):
                    write(split, [text for s, text in chunk if s == split])
        finally:
            for f in files.values():
                f.close()
        for split in ("train", "val"):
            if counts[f"{split}_bytes"] == 0:
                raise ValueError(
                    f"{source.description}: the {split} split is empty; use more text or another val_fraction"
                )
        meta = {
            "format": FORMAT_VERSION,
            "source": source.description,
            "source_fingerprint": source.fingerprint(),
            "tokenizer": tok.name,
            "tokenizer_fingerprint": tok.fingerprint,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "dtype": dtype.name,
            **counts,
        }
        write_json(tmp / "meta.json", meta, indent=1, sort_keys=True)
