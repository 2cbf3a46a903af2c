"""``DataConfig``: where the text comes from, how it is tokenised, where the token cache lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .paths import looks_like_path, resolve_path
from .sources import (
    HF_PREFIX,
    SHARDS_PREFIX,
    ShardsSource,
    Source,
    SourceSettings,
    check_nonempty,
    is_int,
    parse_source,
)

__all__ = ["HF_PREFIX", "SHARDS_PREFIX", "DataConfig", "resolve_path", "tokenizer_path"]

SHAKESPEARE = "shakespeare"  # the default source (``bundled.BUNDLED``)
LOCAL_PREFIX = "local:"  # a tokenizer directory on this machine (e.g. Qwen3's)
BUILTIN_TOKENIZERS = ("byte", "bpe")
PIPELINES = ("cached", "stream")
MIN_BPE_VOCAB = 257  # 256 byte symbols + <|endoftext|>
MAX_BPE_VOCAB = 1 << 20
_S = SourceSettings()  # the defaults of the source settings


def tokenizer_path(tokenizer: str) -> Path:
    """The directory named by ``local:<dir>`` (or by a bare path)."""
    return resolve_path(tokenizer[len(LOCAL_PREFIX) :] if tokenizer.startswith(LOCAL_PREFIX) else tokenizer)


@dataclass
class DataConfig:
    """What to train on.

    source: a bundled corpus (``"shakespeare"``, ``"pycode"``: ``bundled.BUNDLED``), a path to a text
        file or a folder of ``*.txt`` files, ``"hf:<hub name or local path>"`` (HF ``datasets``) or
        ``"shards:<dir>"`` (token shards written by ``hyperconn data prepare``); parsed by
        ``sources.parse_source`` into a typed source.
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
    cache_dir: str = _S.cache_dir
    hf_split: str = _S.hf_split
    hf_text_field: str = _S.hf_text_field
    hf_config: str | None = _S.hf_config
    hf_streaming: bool = _S.hf_streaming
    hf_max_documents: int | None = _S.hf_max_documents
    val_fraction: float = _S.val_fraction
    pipeline: str = "cached"
    max_tokens: int | None = None
    stream_val_tokens: int | None = None
    stream_shuffle_windows: int = 256

    def source_settings(self) -> SourceSettings:
        """The fields a source string does not carry (split and loading settings)."""
        return SourceSettings(
            val_fraction=self.val_fraction,
            hf_split=self.hf_split,
            hf_text_field=self.hf_text_field,
            hf_config=self.hf_config,
            hf_streaming=self.hf_streaming,
            hf_max_documents=self.hf_max_documents,
            cache_dir=self.cache_dir,
        )

    def parsed_source(self) -> Source:
        """``source`` as a typed source (``sources.parse_source``; the form is checked, not the content)."""
        return parse_source(self.source, self.source_settings())

    @property
    def rank0_builds_cache(self) -> bool:
        """True when preparing writes a shared cache (tokens or a trained BPE) that rank 0 must build
        before the other ranks read it; False when every rank can start on its own at once."""
        if isinstance(self.parsed_source(), ShardsSource):
            return False
        return self.tokenizer == "bpe" or self.pipeline == "cached"

    def validate(self) -> Source:
        """ValueError naming the field, the value and what is allowed; FileNotFoundError for a
        missing path. Returns the parsed, validated source."""
        settings = self.source_settings()
        settings.validate()
        source = parse_source(self.source, settings)
        source.validate()
        if isinstance(source, ShardsSource) and self.pipeline != "cached":
            raise ValueError(f"pipeline={self.pipeline!r}: shards are already tokenised; use pipeline='cached'")

        check_nonempty("tokenizer", self.tokenizer)
        if self.tokenizer not in BUILTIN_TOKENIZERS:
            path = tokenizer_path(self.tokenizer)
            if not path.exists():
                if self.tokenizer.startswith(LOCAL_PREFIX) or looks_like_path(self.tokenizer):
                    raise FileNotFoundError(f"tokenizer={self.tokenizer!r}: no such directory ({path})")
                raise ValueError(
                    f"tokenizer={self.tokenizer!r} is not allowed: use one of {BUILTIN_TOKENIZERS} "
                    "or 'local:<dir>' naming an HF tokenizer directory"
                )
            if not path.is_dir():
                raise ValueError(f"tokenizer={self.tokenizer!r}: {path} is not a directory")

        if not is_int(self.bpe_vocab_size) or not MIN_BPE_VOCAB <= self.bpe_vocab_size <= MAX_BPE_VOCAB:
            raise ValueError(
                f"bpe_vocab_size={self.bpe_vocab_size!r}: must be an integer in [{MIN_BPE_VOCAB}, {MAX_BPE_VOCAB}]"
            )
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline={self.pipeline!r}: must be one of {PIPELINES}")
        for name in ("max_tokens", "stream_val_tokens"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"{name}={value!r}: must be None or an integer >= 1")
        if not is_int(self.stream_shuffle_windows) or self.stream_shuffle_windows < 1:
            raise ValueError(f"stream_shuffle_windows={self.stream_shuffle_windows!r}: must be an integer >= 1")
        return source
