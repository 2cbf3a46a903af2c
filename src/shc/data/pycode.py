"""The bundled Python-source corpus ``pycode``: the 542 non-empty ``*.py`` files of NetworkX 3.4.2
(3-clause BSD), code, docstrings and tests; a different kind of text from the Shakespeare corpus.

Built by ``scripts/build_pycode.py`` from the sdist ``networkx==3.4.2``: ``corpus/pycode.jsonl.xz``
holds one JSON line ``{"path", "text"}`` per file and ``corpus/pycode.manifest.json`` the SHA-256 of
the sdist and of the file, per-file byte counts and the validation files (whole files, ~10% of the
bytes, chosen by SHA-256 of the path).
"""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

NAME = "pycode"
MANIFEST_FILE = "pycode.manifest.json"


@dataclass(frozen=True)
class SourceFile:
    path: str  # e.g. "networkx/algorithms/cycles.py"
    text: str


def corpus_dir() -> Path:
    return Path(str(resources.files("shc.data").joinpath("corpus")))


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads((corpus_dir() / MANIFEST_FILE).read_text(encoding="utf-8"))


def corpus_path() -> Path:
    return corpus_dir() / manifest()["file"]


def corpus_sha256() -> str:
    """The recorded SHA-256 of the compressed corpus file (identifies the corpus in cache keys)."""
    return manifest()["sha256"]


def val_paths() -> tuple[str, ...]:
    return tuple(manifest()["val_documents"])


def load_files(verify: bool = True) -> list[SourceFile]:
    """All files in path order. ``verify`` checks the file against the manifest's SHA-256."""
    data = corpus_path().read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != corpus_sha256():
        raise ValueError(f"{corpus_path()}: SHA-256 does not match {corpus_dir() / MANIFEST_FILE}")
    lines = lzma.decompress(data).decode("utf-8").splitlines()
    return [SourceFile(d["path"], d["text"]) for d in map(json.loads, lines)]


def split_files(files: list[SourceFile] | None = None) -> tuple[list[SourceFile], list[SourceFile]]:
    """(train, val): the manifest's validation files, held out whole."""
    files = load_files() if files is None else files
    held_out = set(val_paths())
    return [f for f in files if f.path not in held_out], [f for f in files if f.path in held_out]


DESCRIPTION = f"{NAME} (bundled corpus: NetworkX 3.4.2 Python source)"


def documents():
    """``("train" | "val", text)`` per file, in path order (the data source's one pass)."""
    held_out = set(val_paths())
    for f in load_files():
        yield ("val" if f.path in held_out else "train"), f.text


def fingerprint_settings() -> dict:
    """What identifies this source's content and split in token-cache keys."""
    return {"source": NAME, "sha256": corpus_sha256(), "val": list(val_paths())}
