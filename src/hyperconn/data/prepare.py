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

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .._optional import require
from .batching import TokenBatcher
from .chunks import ENCODE_CHARS, chunk_documents
from .config import SHARDS_PREFIX, DataConfig, resolve_path, shards_path, tokenizer_path
from .shards import BPE_COPY, open_shards, read_index
from .sources import Source, open_source
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
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def resolve_tokenizer(cfg: DataConfig, source: Source | None = None) -> Tokenizer:
    """The tokenizer ``cfg`` names; a ``bpe`` is trained on ``source``'s training split into the
    cache if absent (for a ``shards:`` source it is the copy the shards carry)."""
    cache = resolve_path(cfg.cache_dir)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "bpe" and cfg.source.startswith(SHARDS_PREFIX):
        path = shards_path(cfg.source) / BPE_COPY
        if not path.is_file():
            raise ValueError(f"tokenizer='bpe': the shards at {path.parent} were not tokenised with a trained BPE")
        return BPETokenizer(path, name=f"bpe-{cfg.bpe_vocab_size}")
    if cfg.tokenizer == "bpe":
        source = open_source(cfg) if source is None else source
        key = _key({"kind": "bpe", "version": 1, "vocab_size": cfg.bpe_vocab_size, "source": source.fingerprint})
        path = cache / "tokenizers" / f"bpe-{cfg.bpe_vocab_size}-{key}" / "tokenizer.json"
        if path.exists():
            return BPETokenizer(path, name=f"bpe-{cfg.bpe_vocab_size}")
        return train_bpe(source.train_texts(), cfg.bpe_vocab_size, path)
    return PretrainedTokenizer(tokenizer_path(cfg.tokenizer))


def load_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer ``prepare_data(cfg)`` uses (a BPE comes from the same cache, trained if absent)."""
    cfg.validate()
    return resolve_tokenizer(cfg)


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Validate ``cfg``, get the tokenizer and the token streams (see the module doc)."""
    cfg.validate()
    if cfg.source.startswith(SHARDS_PREFIX):
        return _shard_data(cfg)
    source = open_source(cfg)
    tok = resolve_tokenizer(cfg, source)
    if cfg.pipeline == "stream":
        return _stream_data(cfg, source, tok)
    cache = resolve_path(cfg.cache_dir)
    key = _key({"format": FORMAT_VERSION, "source": source.fingerprint, "tokenizer": tok.fingerprint})
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


def _shard_data(cfg: DataConfig) -> PreparedData:
    directory = shards_path(cfg.source)
    index = read_index(directory)
    tok = resolve_tokenizer(cfg)
    if tok.fingerprint != index["tokenizer_fingerprint"]:
        raise ValueError(
            f"tokenizer={cfg.tokenizer!r} ({tok.name}, {tok.fingerprint[:12]}) is not the tokenizer the shards at "
            f"{directory} were written with ({index['tokenizer']}, {index['tokenizer_fingerprint'][:12]})"
        )
    index, train, val = open_shards(directory, cfg.max_tokens)
    info = {k: v for k, v in index.items() if k != "shards"}
    info.update(path=str(directory), train_tokens=len(train), n_shards=len(index["shards"]))
    return PreparedData(tok, train, val, index["val_bytes"], index["train_bytes"], info)


def _stream_data(cfg: DataConfig, source: Source, tok: Tokenizer) -> PreparedData:
    val_texts = (text for split, text in source.documents() if split == "val")
    val, val_bytes, val_docs = head_documents(val_texts, tok, cfg.stream_val_tokens)
    if val_bytes == 0:
        raise ValueError(f"{source.description}: the validation split is empty; use another val_fraction")
    stream = TrainStream(
        documents=lambda: (text for split, text in source.documents() if split == "train"),
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


def _write_tokens(directory: Path, source: Source, tok: Tokenizer) -> None:
    """Tokenise all documents into ``directory`` atomically (temp dir + rename)."""
    dtype = token_dtype(tok.vocab_size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    counts = {f"{s}_{c}": 0 for s in ("train", "val") for c in ("tokens", "bytes", "documents")}
    try:
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
            "source_fingerprint": source.fingerprint,
            "tokenizer": tok.name,
            "tokenizer_fingerprint": tok.fingerprint,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "dtype": dtype.name,
            **counts,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        try:
            tmp.rename(directory)
        except OSError:
            if not (directory / "meta.json").exists():  # not a concurrent writer that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
