"""How the data settings turn strings into paths (shared by sources and tokenizers)."""

from __future__ import annotations

import os
from pathlib import Path


def looks_like_path(value: str) -> bool:
    """True if ``value`` was meant as a path (so a missing one is FileNotFoundError, not a typo)."""
    return os.sep in value or "/" in value or value.startswith((".", "~")) or Path(value).suffix != ""


def resolve_path(value: str) -> Path:
    """``~`` expanded; relative paths resolve against the current directory."""
    return Path(value).expanduser().resolve()
