"""Text sources, each split into training and validation documents.

- ``"shakespeare"``: the bundled corpus; validation = the whole works listed in its manifest.
- a folder: its ``*.txt`` files (recursive, sorted by relative path), one document each; validation =
  whole files, taken in the order of the SHA-256 of their relative path until they hold at least
  ``val_fraction`` of the bytes (at least one file, never all of them).
- a single text file (or a folder with one file): one document; validation = the tail holding
  ``val_fraction`` of the characters, moved forward to the next line start.
- ``"hf:<name or path>"``: the ``hf_text_field`` column of split ``hf_split`` (empty texts skipped,
  at most ``hf_max_documents``); validation = whole documents, document ``k`` (0-based) when
  ``floor((k+1) f) > floor(k f)`` for ``f = val_fraction``: evenly spread, exactly ``floor(N f)`` of
  ``N``, decidable while streaming.

A ``Source`` yields ``(split, text)`` pairs in one pass and carries a fingerprint of its content and
split settings for cache keys (a hub dataset is identified by its name and settings only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import pycode, shakespeare
from .config import HF_PREFIX, DataConfig, resolve_path

HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_SAVED_DATASET_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass
class Source:
    description: str
    fingerprint: str
    documents: Callable[[], Iterator[tuple[str, str]]]  # yields ("train" | "val", text)

    def train_texts(self) -> Iterator[str]:
        return (text for split, text in self.documents() if split == "train")


def open_source(cfg: DataConfig) -> Source:
    for corpus in (shakespeare.CORPUS, pycode.CORPUS):
        if cfg.source == corpus.name:
            return Source(corpus.description, _fingerprint(corpus.fingerprint_settings()), corpus.documents)
    if cfg.source.startswith(HF_PREFIX):
        return _huggingface(cfg)
    path = resolve_path(cfg.source)
    if path.is_dir():
        return _folder(path, cfg.val_fraction)
    return _single_file(path, cfg.val_fraction)


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


def split_text_tail(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val) of one text: val starts at the first line start at or after
    ``len(text) * (1 - val_fraction)`` (or at that character if no line starts later)."""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut - 1) if cut > 0 else -1
    if newline >= 0 and newline + 1 < len(text):
        cut = newline + 1
    return text[:cut], text[cut:]


def _single_file(path: Path, val_fraction: float) -> Source:
    def documents():
        train, val = split_text_tail(_read_text(path), val_fraction)
        yield "train", train
        yield "val", val

    fp = _fingerprint({"file": hashlib.sha256(path.read_bytes()).hexdigest(), "val_fraction": val_fraction})
    return Source(f"text file {path}", fp, documents)


def choose_val_files(sizes: dict[str, int], val_fraction: float) -> set[str]:
    """Whole files for validation: in the order of SHA-256(name), until >= val_fraction of the bytes
    (at least one, never all)."""
    order = sorted(sizes, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    target, chosen, total = val_fraction * sum(sizes.values()), set(), 0
    for name in order[:-1]:
        chosen.add(name)
        total += sizes[name]
        if total >= target:
            break
    return chosen


def _folder(root: Path, val_fraction: float) -> Source:
    files = sorted((p for p in root.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"source={str(root)!r}: the folder holds no *.txt files")
    if len(files) == 1:
        return _single_file(files[0], val_fraction)
    names = [p.relative_to(root).as_posix() for p in files]
    sizes = {n: p.stat().st_size for n, p in zip(names, files, strict=True)}
    val = choose_val_files(sizes, val_fraction)

    def documents():
        for name, path in zip(names, files, strict=True):
            yield ("val" if name in val else "train"), _read_text(path)

    digests = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in zip(names, files, strict=True)}
    fp = _fingerprint({"folder": digests, "val_fraction": val_fraction})
    return Source(f"folder {root} ({len(files)} files, {len(val)} for validation)", fp, documents)


def is_val_document(k: int, val_fraction: float) -> bool:
    """Document k (0-based) is held out iff floor((k+1) f) > floor(k f) (exact rational arithmetic)."""
    f = Fraction(val_fraction).limit_denominator(1_000_000)
    return ((k + 1) * f.numerator) // f.denominator > (k * f.numerator) // f.denominator


def _local_fingerprint(path: Path) -> list:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[p.relative_to(path.parent).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _load_hf_dataset(cfg: DataConfig):
    import datasets

    name = cfg.source[len(HF_PREFIX) :]
    local = resolve_path(name)
    if not local.exists():
        try:
            return datasets.load_dataset(name, cfg.hf_config, split=cfg.hf_split, streaming=cfg.hf_streaming)
        except FileNotFoundError:
            raise
        except OSError as err:  # e.g. the Hub cannot be reached
            raise ValueError(f"source={cfg.source!r}: cannot load the dataset from the Hub ({err})") from err
    cache = str(resolve_path(cfg.cache_dir) / "hf_datasets")
    if local.is_dir() and any((local / m).exists() for m in _SAVED_DATASET_MARKERS):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.hf_split not in ds:
                raise ValueError(f"hf_split={cfg.hf_split!r}: the dataset at {local} has splits {sorted(ds)}")
            ds = ds[cfg.hf_split]
        return ds.to_iterable_dataset() if cfg.hf_streaming else ds
    if local.is_file():
        builder = HF_FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(
                f"source={cfg.source!r}: cannot read {local.suffix!r} files; use one of {sorted(HF_FILE_BUILDERS)}"
            )
        return datasets.load_dataset(
            builder,
            data_files={cfg.hf_split: str(local)},
            split=cfg.hf_split,
            streaming=cfg.hf_streaming,
            cache_dir=cache,
        )
    return datasets.load_dataset(
        str(local), cfg.hf_config, split=cfg.hf_split, streaming=cfg.hf_streaming, cache_dir=cache
    )


def _huggingface(cfg: DataConfig) -> Source:
    name = cfg.source[len(HF_PREFIX) :]
    local = resolve_path(name)
    field = cfg.hf_text_field

    def documents():
        ds = _load_hf_dataset(cfg)
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
                yield ("val" if is_val_document(k, cfg.val_fraction) else "train"), text
                k += 1
                if cfg.hf_max_documents is not None and k >= cfg.hf_max_documents:
                    return

    settings = {
        "hf": name if not local.exists() else _local_fingerprint(local),
        "config": cfg.hf_config,
        "split": cfg.hf_split,
        "field": field,
        "max_documents": cfg.hf_max_documents,
        "val_fraction": cfg.val_fraction,
    }
    return Source(f"HF dataset {name!r} (split {cfg.hf_split!r})", _fingerprint(settings), documents)
