"""``prepare_data``: source -> tokenizer -> memory-mapped token files, cached.

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

import numpy as np

from .chunks import chunk_documents
from .config import DataConfig, resolve_path
from .sources import Source, open_source
from .tokenizers import BPETokenizer, ByteTokenizer, PretrainedTokenizer, Tokenizer, encode_documents, train_bpe

FORMAT_VERSION = 1
_ENCODE_CHARS = 1 << 20  # characters per encode_batch call


@dataclass
class PreparedData:
    """Token streams ready for training. ``train`` / ``val`` are read-only 1-D memmaps."""

    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    val_bytes: int
    train_bytes: int = 0
    info: dict = field(default_factory=dict)  # the cache's meta.json (counts, names, fingerprints, path)

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


def _tokenizer(cfg: DataConfig, source: Source | None, cache: Path) -> Tokenizer:
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "bpe":
        source = open_source(cfg) if source is None else source
        key = _key({"kind": "bpe", "version": 1, "vocab_size": cfg.bpe_vocab_size, "source": source.fingerprint})
        path = cache / "tokenizers" / f"bpe-{cfg.bpe_vocab_size}-{key}" / "tokenizer.json"
        if path.exists():
            return BPETokenizer(path, name=f"bpe-{cfg.bpe_vocab_size}")
        return train_bpe(source.train_texts(), cfg.bpe_vocab_size, path)
    return PretrainedTokenizer(resolve_path(cfg.tokenizer))


def load_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer ``prepare_data(cfg)`` uses (a BPE comes from the same cache, trained if absent)."""
    cfg.validate()
    return _tokenizer(cfg, None, resolve_path(cfg.cache_dir))


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Validate ``cfg``, get the tokenizer, tokenise the source into the cache (once) and map it."""
    cfg.validate()
    cache = resolve_path(cfg.cache_dir)
    source = open_source(cfg)
    tok = _tokenizer(cfg, source, cache)
    key = _key({"format": FORMAT_VERSION, "source": source.fingerprint, "tokenizer": tok.fingerprint})
    directory = cache / "tokens" / key
    if not (directory / "meta.json").exists():
        _write_tokens(directory, source, tok)
    meta = json.loads((directory / "meta.json").read_text())
    meta["path"] = str(directory)

    def open_split(split: str) -> np.ndarray:
        return np.memmap(directory / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(meta[f"{split}_tokens"],))

    return PreparedData(tok, open_split("train"), open_split("val"), meta["val_bytes"], meta["train_bytes"], meta)


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

            for chunk in chunk_documents(source.documents(), _ENCODE_CHARS, text=lambda doc: doc[1]):
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
