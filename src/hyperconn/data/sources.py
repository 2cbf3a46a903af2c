"""Data sources: the ``DataConfig.source`` string, parsed once (:func:`parse_source`) into a typed source.

| string | type | documents; validation split (``splits``) |
|---|---|---|
| `shakespeare`, `pycode` | `BundledSource` | the bundled corpus (`bundled.BUNDLED`); its held-out documents |
| a path to a text file | `FileSource` | one document; the tail of `val_fraction` of the characters (1) |
| a path to a folder | `FolderSource` | its `*.txt` files, one document each (one file: that file); whole files |
| `hf:<hub name or path>` | `HFSource` | the non-empty texts of `hf_text_field` in `hf_split`; evenly spread documents |
| `shards:<dir>` | `ShardsSource` | token shards written by `hyperconn data prepare`: already tokenised |

(1) a `.csv/.json/.jsonl/.parquet` file warns once (``warn_table_file``): ``hf:<path>`` reads it as a dataset.

Every source is a frozen dataclass with ``validate()`` (ValueError naming the value and what is
allowed, FileNotFoundError for a missing path), ``fingerprint()`` (the SHA-256 of the canonical JSON,
sorted keys, of what identifies its content and split settings; it keys the token cache, the BPE
cache and the shard plan), ``description`` (a human line for logs and metadata) and ``str()``
(the source string back, paths resolved: ``parse_source(str(s)) == s``). Text sources also have
``documents()``: ``("train" | "val", text)`` pairs in one pass. The fingerprinted objects are

- bundled: ``{"source": name, "sha256": SHA-256 of the compressed file, "val": held-out ids}``;
- file: ``{"file": SHA-256 of the bytes, "val_fraction": f}``;
- folder: ``{"folder": {relative name: SHA-256 of the bytes}, "val_fraction": f}``;
- hf: ``{"hf": hub name | [[name, size, mtime_ns], ...] of the local files, "config", "split",
  "field", "max_documents", "val_fraction"}`` (a hub dataset is identified by name and settings);
- shards: the fingerprint of the source the shards were prepared from (from their index).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .bundled import BUNDLED, BundledCorpus
from .hf_datasets import HF_FILE_BUILDERS, load_hf_dataset, local_fingerprint
from .paths import looks_like_path, resolve_path
from .splits import choose_val_files, is_val_document, split_text_tail

HF_PREFIX = "hf:"
SHARDS_PREFIX = "shards:"  # a directory written by ``hyperconn data prepare``
SHARD_INDEX = "index.json"  # written last by ``hyperconn data prepare``: marks a finished directory

__all__ = [
    "HF_PREFIX",
    "SHARDS_PREFIX",
    "BundledSource",
    "FileSource",
    "FolderSource",
    "HFSource",
    "ShardsSource",
    "Source",
    "SourceSettings",
    "TextSource",
    "choose_val_files",
    "is_val_document",
    "open_source",
    "parse_source",
    "split_text_tail",
]


def digest(obj) -> str:
    """SHA-256 of the canonical JSON (sorted keys) of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_nonempty(field: str, value, allowed: str = "a non-empty string") -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r}: must be {allowed}")


def check_val_fraction(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"val_fraction={value!r}: must be a number strictly between 0 and 1")


def check_hf_settings(split, text_field, config, streaming, max_documents) -> None:
    check_nonempty("hf_split", split)
    check_nonempty("hf_text_field", text_field)
    if config is not None:
        check_nonempty("hf_config", config, "a non-empty string or None")
    if not isinstance(streaming, bool):
        raise ValueError(f"hf_streaming={streaming!r}: must be True or False")
    if max_documents is not None and (not is_int(max_documents) or max_documents < 2):
        raise ValueError(
            f"hf_max_documents={max_documents!r}: must be None or an integer >= 2 "
            "(at least one training and one validation document)"
        )


@dataclass(frozen=True)
class SourceSettings:
    """The split and loading settings a source string does not carry (``DataConfig``'s fields of
    the same names; ``cache_dir`` holds the HF datasets cache)."""

    val_fraction: float = 0.1
    hf_split: str = "train"
    hf_text_field: str = "text"
    hf_config: str | None = None
    hf_streaming: bool = False
    hf_max_documents: int | None = None
    cache_dir: str = ".cache/hyperconn"

    def validate(self) -> None:
        check_nonempty("cache_dir", self.cache_dir)
        check_hf_settings(self.hf_split, self.hf_text_field, self.hf_config, self.hf_streaming, self.hf_max_documents)
        check_val_fraction(self.val_fraction)


# files ``hf:`` reads as a table of rows (``hf_datasets.HF_FILE_BUILDERS`` less ``.txt``): as a plain
# source path they are trained as raw text, header and delimiters included, which is rarely meant
TABLE_SUFFIXES = tuple(sorted(s for s, builder in HF_FILE_BUILDERS.items() if builder != "text"))
_warned_table_files: set[Path] = set()


def warn_table_file(path: Path) -> None:
    """Warn, once per file and process, that a ``.csv/.json/.jsonl/.parquet`` source file is read
    as raw text, naming the ``hf:`` spelling that reads it as a dataset."""
    if path.suffix.lower() not in TABLE_SUFFIXES or path in _warned_table_files:
        return
    _warned_table_files.add(path)
    warnings.warn(
        f"source={str(path)!r}: a {path.suffix} file given as a plain path is trained as raw text "
        f"(header, delimiters and all); to read its rows as a dataset (column hf_text_field, default "
        f"'text') use source='{HF_PREFIX}{path}' (e.g. --set data.source={HF_PREFIX}{path})",
        UserWarning,
        stacklevel=3,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


class TextSource:
    """What the text sources share: ``documents()`` yields ``(split, text)`` in one pass."""

    def documents(self) -> Iterator[tuple[str, str]]:
        raise NotImplementedError

    def texts(self, split: str) -> Iterator[str]:
        """The documents of one split (``"train"`` or ``"val"``), in source order."""
        return (text for s, text in self.documents() if s == split)

    def train_texts(self) -> Iterator[str]:
        return self.texts("train")


@dataclass(frozen=True)
class BundledSource(TextSource):
    """A corpus bundled with the package (``bundled.BUNDLED``)."""

    corpus: BundledCorpus

    def __str__(self) -> str:
        return self.corpus.name

    @property
    def description(self) -> str:
        return self.corpus.description

    def validate(self) -> None:
        manifest = self.corpus.folder() / self.corpus.manifest_file
        if not manifest.is_file():
            raise FileNotFoundError(f"source={str(self)!r}: the bundled manifest {manifest} is missing")

    def fingerprint(self) -> str:
        return digest(self.corpus.fingerprint_settings())

    def documents(self) -> Iterator[tuple[str, str]]:
        return self.corpus.documents()


@dataclass(frozen=True)
class FileSource(TextSource):
    """One UTF-8 text file: one training and one validation document (``splits.split_text_tail``)."""

    path: Path
    val_fraction: float = SourceSettings.val_fraction

    def __str__(self) -> str:
        return str(self.path)

    @property
    def description(self) -> str:
        return f"text file {self.path}"

    def validate(self) -> None:
        check_val_fraction(self.val_fraction)
        if not self.path.exists():
            raise FileNotFoundError(f"source={str(self)!r}: no such file or folder ({self.path})")
        if not self.path.is_file():
            raise ValueError(f"source={str(self)!r}: not a regular file; use a text file or a folder of *.txt files")
        warn_table_file(self.path)

    def fingerprint(self) -> str:
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:  # computed once per source object, like the listing of a folder
        return digest({"file": hashlib.sha256(self.path.read_bytes()).hexdigest(), "val_fraction": self.val_fraction})

    def documents(self) -> Iterator[tuple[str, str]]:
        train, val = split_text_tail(_read_text(self.path), self.val_fraction)
        yield "train", train
        yield "val", val


@dataclass(frozen=True)
class FolderSource(TextSource):
    """The ``*.txt`` files under a folder, one document each; whole files held out
    (``splits.choose_val_files``). A folder with a single file is that :class:`FileSource`."""

    path: Path
    val_fraction: float = SourceSettings.val_fraction

    def __str__(self) -> str:
        return str(self.path)

    def validate(self) -> None:
        check_val_fraction(self.val_fraction)
        if not self.path.is_dir():
            raise FileNotFoundError(f"source={str(self)!r}: no such folder ({self.path})")
        if not self._files:
            raise ValueError(f"source={str(self)!r}: the folder {self.path} holds no *.txt files")

    @cached_property
    def _files(self) -> dict[str, Path]:
        """Relative name -> path, sorted by name (listed once per source object)."""
        files = (p for p in self.path.rglob("*.txt") if p.is_file())
        return dict(sorted((p.relative_to(self.path).as_posix(), p) for p in files))

    @cached_property
    def _val(self) -> set[str]:
        return choose_val_files({n: p.stat().st_size for n, p in self._files.items()}, self.val_fraction)

    def _single(self) -> FileSource | None:
        if not self._files:
            raise ValueError(f"source={str(self)!r}: the folder holds no *.txt files")
        return FileSource(next(iter(self._files.values())), self.val_fraction) if len(self._files) == 1 else None

    @property
    def description(self) -> str:
        single = self._single()
        if single is not None:
            return single.description
        return f"folder {self.path} ({len(self._files)} files, {len(self._val)} for validation)"

    def fingerprint(self) -> str:
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        single = self._single()
        if single is not None:
            return single.fingerprint()
        digests = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in self._files.items()}
        return digest({"folder": digests, "val_fraction": self.val_fraction})

    def documents(self) -> Iterator[tuple[str, str]]:
        single = self._single()
        if single is not None:
            yield from single.documents()
            return
        val = self._val
        for name, path in self._files.items():
            yield ("val" if name in val else "train"), _read_text(path)


@dataclass(frozen=True)
class HFSource(TextSource):
    """A Hugging Face ``datasets`` dataset (``hf_datasets.load_hf_dataset``): the non-empty texts of
    column ``text_field``; document ``k`` is held out iff ``splits.is_val_document(k, val_fraction)``."""

    name: str  # a hub name, or a local path as written after ``hf:``
    split: str = SourceSettings.hf_split
    text_field: str = SourceSettings.hf_text_field
    config: str | None = SourceSettings.hf_config
    streaming: bool = SourceSettings.hf_streaming
    max_documents: int | None = SourceSettings.hf_max_documents
    val_fraction: float = SourceSettings.val_fraction
    cache_dir: str = SourceSettings.cache_dir

    def __str__(self) -> str:
        return HF_PREFIX + self.name

    @property
    def description(self) -> str:
        return f"HF dataset {self.name!r} (split {self.split!r})"

    @property
    def local(self) -> Path:
        return resolve_path(self.name)

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"source={str(self)!r}: 'hf:' must be followed by a dataset name or path")
        if self.name.startswith((".", "/", "~")) and not self.local.exists():
            raise FileNotFoundError(f"source={str(self)!r}: no local dataset at {self.local}")
        check_hf_settings(self.split, self.text_field, self.config, self.streaming, self.max_documents)
        check_val_fraction(self.val_fraction)

    def fingerprint(self) -> str:
        local = self.local
        settings = {
            "hf": self.name if not local.exists() else local_fingerprint(local),
            "config": self.config,
            "split": self.split,
            "field": self.text_field,
            "max_documents": self.max_documents,
            "val_fraction": self.val_fraction,
        }
        return digest(settings)

    def documents(self) -> Iterator[tuple[str, str]]:
        ds = load_hf_dataset(self)
        field = self.text_field
        columns = ds.column_names
        if columns is not None and field not in columns:
            raise ValueError(f"hf_text_field={field!r}: the dataset has columns {sorted(columns)}")
        k = 0
        for batch in ds.select_columns([field]).iter(batch_size=1000):
            for text in batch[field]:
                if not isinstance(text, str):
                    raise ValueError(f"hf_text_field={field!r}: expected strings, got {type(text).__name__}")
                if not text:
                    continue
                yield ("val" if is_val_document(k, self.val_fraction) else "train"), text
                k += 1
                if self.max_documents is not None and k >= self.max_documents:
                    return


@dataclass(frozen=True)
class ShardsSource:
    """A shard directory written by ``hyperconn data prepare`` (already tokenised: no documents)."""

    path: Path

    def __str__(self) -> str:
        return SHARDS_PREFIX + str(self.path)

    @property
    def description(self) -> str:
        return f"shards {self.path}"

    @property
    def index_path(self) -> Path:
        return self.path / SHARD_INDEX

    def validate(self) -> None:
        if not self.index_path.is_file():
            raise FileNotFoundError(
                f"source={str(self)!r}: {self.index_path} does not exist; write the shards first with "
                f"`hyperconn data prepare --out {self.path}` (a prepare that did not finish leaves no index)"
            )

    def fingerprint(self) -> str:
        """The fingerprint of the text source the shards were prepared from (recorded in the index)."""
        return json.loads(self.index_path.read_text(encoding="utf-8"))["source_fingerprint"]


Source = BundledSource | FileSource | FolderSource | HFSource | ShardsSource

_ALLOWED = (
    f"use a bundled corpus ({', '.join(repr(n) for n in sorted(BUNDLED))}), a path to a text file or folder, "
    f"'{HF_PREFIX}<dataset name or path>' or '{SHARDS_PREFIX}<dir>'"
)


def parse_source(text: str, settings: SourceSettings | None = None) -> Source:
    """The typed source the string ``text`` names (the one place that reads the string's form);
    ``settings`` supplies what the string does not carry. Checks the form only: ``validate()``
    checks that what it names exists."""
    settings = SourceSettings() if settings is None else settings
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"source={text!r}: must be a non-empty string; {_ALLOWED}")
    if text in BUNDLED:
        return BundledSource(BUNDLED[text])
    if text.startswith(HF_PREFIX):
        name = text[len(HF_PREFIX) :]
        if not name.strip():
            raise ValueError(f"source={text!r}: 'hf:' must be followed by a dataset name or path")
        return HFSource(
            name,
            split=settings.hf_split,
            text_field=settings.hf_text_field,
            config=settings.hf_config,
            streaming=settings.hf_streaming,
            max_documents=settings.hf_max_documents,
            val_fraction=settings.val_fraction,
            cache_dir=settings.cache_dir,
        )
    if text.startswith(SHARDS_PREFIX):
        folder = text[len(SHARDS_PREFIX) :]
        if not folder.strip():
            raise ValueError(f"source={text!r}: 'shards:' must be followed by the shard directory")
        return ShardsSource(resolve_path(folder))
    path = resolve_path(text)
    if path.is_dir():
        return FolderSource(path, settings.val_fraction)
    if path.exists() or looks_like_path(text):
        return FileSource(path, settings.val_fraction)
    raise ValueError(f"source={text!r} is not allowed: {_ALLOWED}")


def open_source(cfg) -> TextSource:
    """The text source of a ``DataConfig`` (``cfg.parsed_source()``); a ``shards:`` source is refused."""
    source = cfg.parsed_source()
    if isinstance(source, ShardsSource):
        raise ValueError(f"source={str(source)!r}: already tokenised shards; this needs a text source")
    return source
