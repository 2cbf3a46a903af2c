"""Tokenizers behind one small protocol: byte-level, BPE trained with HF ``tokenizers``, any HF
tokenizer directory (``transformers.AutoTokenizer``).

Every tokenizer maps text to ids in ``[0, vocab_size)`` and has an end-of-text id ``eos_id`` that
separates documents in a token stream. ``decode`` drops special tokens (``eos``) so that a generated
sample reads as text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .._optional import require
from ..fileio import atomic_path

np = require("numpy", "hyperconn.data")

EOS_TOKEN = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus ``eos = 256``; ``vocab_size = 257``.

    Lossless for any text; ``decode`` replaces invalid UTF-8 (e.g. a sample cut mid-character) with
    U+FFFD instead of failing.
    """

    name = "byte"
    vocab_size = 257
    eos_id = 256
    fingerprint = "byte-v1"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=257, eos_id=256)"


class BPETokenizer:
    """A byte-level BPE (HF ``tokenizers``) loaded from a ``tokenizer.json``; ``<|endoftext|>`` is eos."""

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path)
        self._tok = HFTokenizer.from_file(str(self.path))
        eos = self._tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise ValueError(f"{self.path}: the tokenizer has no {EOS_TOKEN!r} token")
        self.eos_id = eos
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.name = name or f"bpe-{self.vocab_size}"
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"BPETokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


def train_bpe(texts: Iterator[str], vocab_size: int, path: str | os.PathLike) -> BPETokenizer:
    """Train a byte-level BPE with ``vocab_size`` ids (256 byte symbols, ``<|endoftext|>``, merges)
    on ``texts`` and save it atomically to ``path`` (a ``tokenizer.json``)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return BPETokenizer(path, name=f"bpe-{vocab_size}")


class PretrainedTokenizer:
    """Any HF tokenizer directory, loaded with ``transformers.AutoTokenizer.from_pretrained`` (local
    files only). ``vocab_size = len(tokenizer)`` (added tokens included); eos is the tokenizer's
    ``eos_token`` (else its ``sep_token``)."""

    def __init__(self, path: str | os.PathLike):
        from transformers import AutoTokenizer

        self.path = Path(path).expanduser().resolve()
        self._tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        eos = self._tok.eos_token_id
        if eos is None:
            eos = self._tok.sep_token_id
        if eos is None:
            raise ValueError(
                f"tokenizer={str(path)!r}: the tokenizer defines neither eos_token nor sep_token; "
                "one is needed to separate documents"
            )
        self.eos_id = int(eos)
        self.vocab_size = len(self._tok)
        self.name = f"hf:{self.path.name}"
        self.fingerprint = directory_fingerprint(self.path)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False, verbose=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"PretrainedTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


# model weights and checkpoints: a tokenizer directory is often a whole model download (Qwen3-0.6B
# carries 1.5 GB of weights) and hashing those at every start-up, on every rank, would take seconds
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")


def directory_fingerprint(path: Path) -> str:
    """SHA-256 over the relative names and contents of the files of a directory, model weights
    (``WEIGHT_SUFFIXES``) and hidden files left out."""
    digest = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in sorted(p for p in files if p.suffix.lower() not in WEIGHT_SUFFIXES):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def encode_documents(tok: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """The documents' ids, each followed by ``eos``, as one int64 array (empty for no documents);
    ids outside ``[0, vocab_size)`` are an error (they would wrap around in a narrow dtype)."""
    if not texts:
        return np.empty(0, dtype=np.int64)
    encoded = tok.encode_batch(texts) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in texts]
    ids = np.concatenate([np.asarray([*doc, tok.eos_id], dtype=np.int64) for doc in encoded])
    if ids.min() < 0 or ids.max() >= tok.vocab_size:
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"tokenizer {tok.name} produced id {bad} outside [0, vocab_size={tok.vocab_size})")
    return ids


def tokenizer_spec(tok: Tokenizer) -> tuple[str, ...]:
    """A small hashable description from which another process rebuilds ``tok``."""
    if isinstance(tok, ByteTokenizer):
        return ("byte",)
    if isinstance(tok, BPETokenizer):
        return ("bpe", str(tok.path), tok.name)
    if isinstance(tok, PretrainedTokenizer):
        return ("pretrained", str(tok.path))
    raise TypeError(f"cannot describe a {type(tok).__name__} for another process")


def tokenizer_from_spec(spec: tuple[str, ...]) -> Tokenizer:
    kind, *args = spec
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer(args[0], name=args[1])
    if kind == "pretrained":
        return PretrainedTokenizer(args[0])
    raise ValueError(f"unknown tokenizer spec {spec!r}")
