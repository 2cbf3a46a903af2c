"""``DataConfig``: where the text comes from, how it is tokenised, where the token cache lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHAKESPEARE = "shakespeare"
HF_PREFIX = "hf:"
BUILTIN_TOKENIZERS = ("byte", "bpe")
MIN_BPE_VOCAB = 257  # 256 byte symbols + <|endoftext|>
MAX_BPE_VOCAB = 1 << 20


def _looks_like_path(value: str) -> bool:
    """True if ``value`` was meant as a path (so a missing one is FileNotFoundError, not a typo)."""
    return os.sep in value or "/" in value or value.startswith((".", "~")) or Path(value).suffix != ""


def resolve_path(value: str) -> Path:
    """``~`` expanded; relative paths resolve against the current directory."""
    return Path(value).expanduser().resolve()


@dataclass
class DataConfig:
    """What to train on.

    source: ``"shakespeare"`` (the bundled corpus), a path to a text file or a folder of ``*.txt``
        files, or ``"hf:<hub name or local path>"`` (HF ``datasets``).
    tokenizer: ``"byte"`` (256 byte ids + ``<eos>``), ``"bpe"`` (byte-level BPE trained on the training
        split, ``bpe_vocab_size`` ids, cached) or the path of an HF tokenizer directory.
    cache_dir: tokenizers and memory-mapped token files; relative to the current directory.
    hf_*: the HF split, text column, config name, streaming, and a cap on the number of documents.
    val_fraction: share held out for validation where the source has no fixed held-out set
        (whole files of a folder, whole documents of an HF split, the tail of a single file).
    """

    source: str = SHAKESPEARE
    tokenizer: str = "byte"
    bpe_vocab_size: int = 2048
    cache_dir: str = ".cache/shc"
    hf_split: str = "train"
    hf_text_field: str = "text"
    hf_config: str | None = None
    hf_streaming: bool = False
    hf_max_documents: int | None = None
    val_fraction: float = 0.1

    def validate(self) -> None:
        """ValueError naming the field, the value and what is allowed; FileNotFoundError for a
        missing path."""
        _nonempty_str("source", self.source)
        if self.source.startswith(HF_PREFIX):
            name = self.source[len(HF_PREFIX) :]
            if not name.strip():
                raise ValueError(f"source={self.source!r}: 'hf:' must be followed by a dataset name or path")
            if name.startswith((".", "/", "~")) and not resolve_path(name).exists():
                raise FileNotFoundError(f"source={self.source!r}: no local dataset at {resolve_path(name)}")
        elif self.source != SHAKESPEARE:
            path = resolve_path(self.source)
            if not path.exists():
                if _looks_like_path(self.source):
                    raise FileNotFoundError(f"source={self.source!r}: no such file or folder ({path})")
                raise ValueError(
                    f"source={self.source!r} is not allowed: use {SHAKESPEARE!r}, a path to a text file "
                    f"or folder, or 'hf:<dataset name or path>'"
                )
            if path.is_dir() and not any(p.is_file() for p in path.rglob("*.txt")):
                raise ValueError(f"source={self.source!r}: the folder {path} holds no *.txt files")

        _nonempty_str("tokenizer", self.tokenizer)
        if self.tokenizer not in BUILTIN_TOKENIZERS:
            path = resolve_path(self.tokenizer)
            if not path.exists():
                if _looks_like_path(self.tokenizer):
                    raise FileNotFoundError(f"tokenizer={self.tokenizer!r}: no such directory ({path})")
                raise ValueError(
                    f"tokenizer={self.tokenizer!r} is not allowed: use one of {BUILTIN_TOKENIZERS} "
                    "or the path of an HF tokenizer directory"
                )
            if not path.is_dir():
                raise ValueError(f"tokenizer={self.tokenizer!r}: {path} is not a directory")

        if not _is_int(self.bpe_vocab_size) or not MIN_BPE_VOCAB <= self.bpe_vocab_size <= MAX_BPE_VOCAB:
            raise ValueError(
                f"bpe_vocab_size={self.bpe_vocab_size!r}: must be an integer in [{MIN_BPE_VOCAB}, {MAX_BPE_VOCAB}]"
            )
        _nonempty_str("cache_dir", self.cache_dir)
        _nonempty_str("hf_split", self.hf_split)
        _nonempty_str("hf_text_field", self.hf_text_field)
        if self.hf_config is not None:
            _nonempty_str("hf_config", self.hf_config, "a non-empty string or None")
        if not isinstance(self.hf_streaming, bool):
            raise ValueError(f"hf_streaming={self.hf_streaming!r}: must be True or False")
        if self.hf_max_documents is not None and (not _is_int(self.hf_max_documents) or self.hf_max_documents < 2):
            raise ValueError(
                f"hf_max_documents={self.hf_max_documents!r}: must be None or an integer >= 2 "
                "(at least one training and one validation document)"
            )
        if (
            isinstance(self.val_fraction, bool)
            or not isinstance(self.val_fraction, (int, float))
            or not 0.0 < self.val_fraction < 1.0
        ):
            raise ValueError(f"val_fraction={self.val_fraction!r}: must be a number strictly between 0 and 1")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_str(field: str, value, allowed: str = "a non-empty string") -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r}: must be {allowed}")
