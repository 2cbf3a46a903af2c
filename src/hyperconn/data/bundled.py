"""A corpus bundled with the package: one compressed JSON-lines file plus a manifest.

``corpus/<file>.jsonl.xz`` holds one JSON object per document; the manifest records the SHA-256 of
the source artifact it was built from and of the bundled file, per-document sizes, and the
documents held out for validation (whole documents). The corpora are declared here, once:
:data:`BUNDLED` maps each ``data.source`` name to its :class:`BundledCorpus` (the corpus modules
``shakespeare`` and ``pycode`` add typed views of their records); the loading, integrity check and
split live here once.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path


def package_corpus_dir() -> Path:
    return Path(str(resources.files("hyperconn.data").joinpath("corpus")))


@cache
def _read_manifest(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class BundledCorpus:
    name: str  # the data source name (``data.source: <name>``)
    description: str
    manifest_file: str  # in ``directory``
    id_field: str  # the JSON field naming a document ("work", "path")
    held_out_field: str  # the manifest's list of validation documents
    directory: Path | None = None  # None: the package's corpus folder

    def folder(self) -> Path:
        return self.directory if self.directory is not None else package_corpus_dir()

    def manifest(self) -> dict:
        return _read_manifest(self.folder() / self.manifest_file)

    def path(self) -> Path:
        return self.folder() / self.manifest()["file"]

    def sha256(self) -> str:
        """The recorded SHA-256 of the compressed file (identifies the corpus in cache keys)."""
        return self.manifest()["sha256"]

    def held_out(self) -> tuple[str, ...]:
        return tuple(self.manifest()[self.held_out_field])

    def records(self, verify: bool = True) -> list[dict]:
        """Every document's JSON object, in file order; ``verify`` checks the file's SHA-256."""
        data = self.path().read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != self.sha256():
            raise ValueError(f"{self.path()}: SHA-256 does not match {self.folder() / self.manifest_file}")
        return [json.loads(line) for line in lzma.decompress(data).decode("utf-8").splitlines()]

    def documents(self) -> Iterator[tuple[str, str]]:
        """``("train" | "val", text)`` per document, in file order (the data source's one pass)."""
        held_out = set(self.held_out())
        for record in self.records():
            yield ("val" if record[self.id_field] in held_out else "train"), record["text"]

    def fingerprint_settings(self) -> dict:
        """What identifies the content and the split in token-cache keys."""
        return {"source": self.name, "sha256": self.sha256(), "val": list(self.held_out())}


SHAKESPEARE = BundledCorpus(
    name="shakespeare",
    description="shakespeare (bundled corpus)",
    manifest_file="manifest.json",
    id_field="work",
    held_out_field="val_works",
)

PYCODE = BundledCorpus(
    name="pycode",
    description="pycode (bundled corpus: NetworkX 3.4.2 Python source)",
    manifest_file="pycode.manifest.json",
    id_field="path",
    held_out_field="val_documents",
)

# the one list of bundled corpora: ``data.source: <name>`` for each key
BUNDLED: dict[str, BundledCorpus] = {corpus.name: corpus for corpus in (SHAKESPEARE, PYCODE)}
