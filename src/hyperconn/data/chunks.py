"""Group a stream of documents into chunks of about ``max_chars`` characters, in one pass.

Tokenisers are fastest on batches (``encode_batch``), and a shard is one chunk, so both the cache
writer and ``hyperconn data prepare`` cut the document stream here. The running character count is kept
as an integer: re-summing the pending documents at every append would be quadratic in the number
of documents per chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

ENCODE_CHARS = 1 << 20  # characters per encode_batch call: large enough for the tokenizer's threads, small in memory


def chunk_documents(items: Iterable[T], max_chars: int, text=lambda item: item) -> Iterator[list[T]]:
    """Consecutive, non-empty lists of ``items`` (order kept, nothing dropped or repeated).

    A chunk closes as soon as the characters of its items (``len(text(item))``) reach ``max_chars``,
    so every chunk but the last holds at least ``max_chars`` characters and dropping its last item
    would leave fewer; an item longer than ``max_chars`` is a chunk of its own.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars={max_chars!r}: must be an integer >= 1")
    pending: list[T] = []
    chars = 0
    for item in items:
        pending.append(item)
        chars += len(text(item))
        if chars >= max_chars:
            yield pending
            pending, chars = [], 0
    if pending:
        yield pending
