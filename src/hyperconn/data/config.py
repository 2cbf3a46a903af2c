"""``DataConfig``: where the text comes from, how it is tokenised, where the token cache lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SHAKESPEARE = "shakespeare"
HF_PREFIX = "hf:"
SHARDS_PREFIX = "shards:"  # a directory written by ``hyperconn data prepare``
LOCAL_PREFIX = "local:"  # a tokenizer directory on this machine (e.g. Qwen3's)
SHARD_INDEX = "index.json"
BUILTIN_TOKENIZERS = ("byte", "bpe")
PIPELINES = ("cached", "stream")
MIN_BPE_VOCAB = 257  # 256 byte symbols + <|endoftext|>
MAX_BPE_VOCAB = 1 << 20


def _looks_like_path(value: str) -> bool:
    """True if ``value`` was meant as a path (so a missing one is FileNotFoundError, not a typo)."""
    return os.sep in value or "/" in value or value.startswith((".", "~")) or Path(value).suffix != ""


def resolve_path(value: str) -> Path:
    """``~`` expanded; relative paths resolve against the current directory."""
    return Path(value).expanduser().resolve()


def tokenizer_path(tokenizer: str) -> Path:
    """The directory named by ``local:<dir>`` (or by a bare path)."""
    return resolve_path(tokenizer[len(LOCAL_PREFIX) :] if tokenizer.startswith(LOCAL_PREFIX) else tokenizer)


def shards_path(source: str) -> Path:
    return resolve_path(source[len(SHARDS_PREFIX) :])


@dataclass
class DataConfig:
    """What to train on.

    source: ``"shakespeare"`` (the bundled corpus), a path to a text file or a folder of ``*.txt``
        files, ``"hf:<hub name or local path>"`` (HF ``datasets``) or ``"shards:<dir>"`` (token shards
        written by ``hyperconn data prepare``).
    tokenizer: ``"byte"`` (256 byte ids + ``<eos>``), ``"bpe"`` (byte-level BPE trained on the training
        split, ``bpe_vocab_size`` ids, cached) or ``"local:<dir>"`` / the path of an HF tokenizer
        directory (e.g. Qwen3's).
    cache_dir: tokenizers and memory-mapped token files; relative to the current directory.
    hf_*: the HF split, text column, config name, streaming (``IterableDataset``), and a cap on the
        number of documents.
    val_fraction: share held out for validation where the source has no fixed held-out set
        (whole files of a folder, whole documents of an HF split, the tail of a single file).
    pipeline: ``"cached"``: the source is tokenised once into ``cache_dir`` (rank 0) and memory-mapped
        (``shards:`` sources are read as they are); ``"stream"``: every rank tokenises its own share
        of the training documents on the fly (``hyperconn.data.streaming``), nothing is cached.
    max_tokens: training-token budget: the first ``max_tokens`` training tokens are used (cached,
        shards), or one pass over the stream ends after ``max_tokens`` tokens over all ranks (stream).
    stream_val_tokens: (stream) validation = the first held-out documents up to this many tokens
        (None: all of them, which reads the whole source before training starts).
    stream_shuffle_windows: (stream) windows are drawn from a seeded shuffle buffer of this size.
    """

    source: str = SHAKESPEARE
    tokenizer: str = "byte"
    bpe_vocab_size: int = 2048
    cache_dir: str = ".cache/hyperconn"
    hf_split: str = "train"
    hf_text_field: str = "text"
    hf_config: str | None = None
    hf_streaming: bool = False
    hf_max_documents: int | None = None
    val_fraction: float = 0.1
    pipeline: str = "cached"
    max_tokens: int | None = None
    stream_val_tokens: int | None = None
    stream_shuffle_windows: int = 256

    @property
    def rank0_builds_cache(self) -> bool:
        """True when preparing writes a shared cache (tokens or a trained BPE) that rank 0 must build
        before the other ranks read it; False when every rank can start on its own at once."""
        if self.tokenizer == "bpe":
            return not self.source.startswith(SHARDS_PREFIX)
        return self.pipeline == "cached" and not self.source.startswith(SHARDS_PREFIX)

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
        elif self.source.startswith(SHARDS_PREFIX):
            path = shards_path(self.source)
            if not (path / SHARD_INDEX).is_file():
                raise FileNotFoundError(
                    f"source={self.source!r}: {path / SHARD_INDEX} does not exist; write the shards first with "
                    f"`hyperconn data prepare --out {path}` (a prepare that did not finish leaves no index)"
                )
            if self.pipeline != "cached":
                raise ValueError(f"pipeline={self.pipeline!r}: shards are already tokenised; use pipeline='cached'")
        elif self.source not in (SHAKESPEARE, "pycode"):  # the bundled corpora (sources.open_source)
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
            path = tokenizer_path(self.tokenizer)
            if not path.exists():
                if self.tokenizer.startswith(LOCAL_PREFIX) or _looks_like_path(self.tokenizer):
                    raise FileNotFoundError(f"tokenizer={self.tokenizer!r}: no such directory ({path})")
                raise ValueError(
                    f"tokenizer={self.tokenizer!r} is not allowed: use one of {BUILTIN_TOKENIZERS} "
                    "or 'local:<dir>' naming an HF tokenizer directory"
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
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline={self.pipeline!r}: must be one of {PIPELINES}")
        for name in ("max_tokens", "stream_val_tokens"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name}={value!r}: must be None or an integer >= 1")
        if not _is_int(self.stream_shuffle_windows) or self.stream_shuffle_windows < 1:
            raise ValueError(f"stream_shuffle_windows={self.stream_shuffle_windows!r}: must be an integer >= 1")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_str(field: str, value, allowed: str = "a non-empty string") -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r}: must be {allowed}")
