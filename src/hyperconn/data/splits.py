"""How a text source is split into training and validation documents (pure functions).

- one text: validation = the tail holding ``val_fraction`` of the characters, moved forward to the
  next line start (:func:`split_text_tail`);
- several files: whole files, taken in the order of the SHA-256 of their names until they hold at
  least ``val_fraction`` of the bytes, at least one and never all (:func:`choose_val_files`);
- a stream of documents: document ``k`` (0-based) is held out iff
  ``floor((k+1) f) > floor(k f)`` for ``f = val_fraction``: evenly spread, exactly ``floor(N f)``
  of ``N``, decidable while streaming (:func:`is_val_document`).
"""

from __future__ import annotations

import hashlib
from fractions import Fraction


def split_text_tail(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val) of one text: val starts at the first line start at or after
    ``len(text) * (1 - val_fraction)`` (or at that character if no line starts later)."""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut - 1) if cut > 0 else -1
    if newline >= 0 and newline + 1 < len(text):
        cut = newline + 1
    return text[:cut], text[cut:]


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


def is_val_document(k: int, val_fraction: float) -> bool:
    """Document k (0-based) is held out iff floor((k+1) f) > floor(k f) (exact rational arithmetic)."""
    f = Fraction(val_fraction).limit_denominator(1_000_000)
    return ((k + 1) * f.numerator) // f.denominator > (k * f.numerator) // f.denominator
