"""The bundled Python-source corpus ``pycode``: the 542 non-empty ``*.py`` files of NetworkX 3.4.2
(3-clause BSD), code, docstrings and tests; a different kind of text from the Shakespeare corpus.

Built by ``scripts/build_pycode.py`` from the sdist ``networkx==3.4.2``: ``corpus/pycode.jsonl.xz``
holds one JSON line ``{"path", "text"}`` per file and ``corpus/pycode.manifest.json`` the SHA-256 of
the sdist and of the file, per-file byte counts and the validation files (whole files, ~10% of the
bytes, chosen by SHA-256 of the path).
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundled import PYCODE, BundledCorpus

CORPUS = PYCODE  # declared in ``bundled.BUNDLED``


@dataclass(frozen=True)
class SourceFile:
    path: str  # e.g. "networkx/algorithms/cycles.py"
    text: str


def load_files(corpus: BundledCorpus = CORPUS, verify: bool = True) -> list[SourceFile]:
    """All files in path order. ``verify`` checks the file against the manifest's SHA-256."""
    return [SourceFile(d["path"], d["text"]) for d in corpus.records(verify)]


def split_files(
    files: list[SourceFile] | None = None, corpus: BundledCorpus = CORPUS
) -> tuple[list[SourceFile], list[SourceFile]]:
    """(train, val): the manifest's validation files, held out whole."""
    files = load_files(corpus) if files is None else files
    held_out = set(corpus.held_out())
    return [f for f in files if f.path not in held_out], [f for f in files if f.path in held_out]
