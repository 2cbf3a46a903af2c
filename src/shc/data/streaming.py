"""The stream pipeline: every rank tokenises its own share of the training documents on the fly.

Nothing is cached and no rank waits for another. Rank ``r`` of ``W`` takes the training documents
``j`` with ``j % W == r`` (``j`` counts training documents in source order), tokenises them in
chunks (``chunks.chunk_documents``), packs them, each followed by eos, into windows of
``seq_len + 1`` tokens with stride ``seq_len`` (every token is a target once per pass), and draws
windows from a shuffle buffer of ``shuffle_windows`` seeded by ``(seed, rank, pass)``. With
``max_tokens`` a pass ends after ``max_tokens // W`` of the rank's tokens; at the end of a pass
(or of the source) the next pass starts from the first document again.

Everything is a deterministic function of the source, the tokenizer and ``(seed, rank,
world_size)``. ``batch(step, micro)`` must be asked in order; asked for any other position (a
resumed run starts at its checkpoint's step) it re-seeks exactly by replaying the stream from the
start, which re-reads and re-tokenises this rank's documents up to that position: the resumed run
sees the same batches as the uninterrupted one, at the cost of that replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count

import torch

from .._optional import require
from .chunks import ENCODE_CHARS, chunk_documents
from .tokenizers import Tokenizer, encode_documents

np = require("numpy", "shc.data")


@dataclass(frozen=True)
class TrainStream:
    """The training documents of a source, read afresh by every call of ``documents()``."""

    documents: Callable[[], Iterator[str]]
    description: str
    max_tokens: int | None = None  # per pass, over all ranks
    shuffle_windows: int = 256


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class StreamingBatcher:
    """``batch(step, micro) -> (x, y)`` like ``TokenBatcher``, tokenising on the fly (see module doc)."""

    def __init__(
        self,
        stream: TrainStream,
        tokenizer: Tokenizer,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        micro_steps: int = 1,
        encode_chars: int = ENCODE_CHARS,
    ):
        for name, value in (
            ("seq_len", seq_len),
            ("batch_size", batch_size),
            ("world_size", world_size),
            ("micro_steps", micro_steps),
            ("encode_chars", encode_chars),
        ):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed={seed!r}: must be an integer >= 0")
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r}: must be an integer in [0, world_size={world_size})")
        self.rank_budget = None if stream.max_tokens is None else stream.max_tokens // world_size
        if self.rank_budget is not None and self.rank_budget < seq_len + 1:
            raise ValueError(
                f"max_tokens={stream.max_tokens} over {world_size} rank(s) leaves {self.rank_budget} tokens per "
                f"rank and pass, fewer than seq_len + 1 = {seq_len + 1}"
            )
        self.stream, self.tokenizer = stream, tokenizer
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size, self.micro_steps, self.encode_chars = rank, world_size, micro_steps, encode_chars
        self._windows: Iterator[np.ndarray] | None = None
        self._next = 0  # the position the live iterator stands at
        self.replays = 0  # how many times a re-seek replayed the stream (a resume does once)

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if not _is_int(step) or step < 0 or not _is_int(micro) or not 0 <= micro < self.micro_steps:
            raise ValueError(
                f"step={step!r}, micro={micro!r}: must be integers, step >= 0, 0 <= micro < {self.micro_steps}"
            )
        position = int(step) * self.micro_steps + int(micro)
        if self._windows is None or position != self._next:
            if self._windows is not None or position > 0:
                self.replays += 1
            self._windows = self._window_stream()
            for _ in range(position * self.batch_size):
                next(self._windows)
        rows = np.stack([next(self._windows) for _ in range(self.batch_size)])
        self._next = position + 1
        w = torch.from_numpy(rows.astype(np.int64))
        return w[:, :-1], w[:, 1:]

    def _window_stream(self) -> Iterator[np.ndarray]:
        size = self.stream.shuffle_windows
        for epoch in count():
            rng = np.random.default_rng([self.seed, self.rank, epoch])
            buffer: list[np.ndarray] = []
            produced = False
            for window in self._pass_windows():
                produced = True
                if len(buffer) < size:
                    buffer.append(window)
                    continue
                j = int(rng.integers(size))
                yield buffer[j]
                buffer[j] = window
            while buffer:
                j = int(rng.integers(len(buffer)))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                yield buffer.pop()
            if not produced:
                raise ValueError(
                    f"{self.stream.description}: rank {self.rank} of {self.world_size} has fewer than "
                    f"seq_len + 1 = {self.seq_len + 1} training tokens; use more data, fewer ranks or a shorter seq_len"
                )

    def _pass_windows(self) -> Iterator[np.ndarray]:
        """One pass: this rank's documents packed into windows of seq_len + 1, stride seq_len."""
        seq, budget, used = self.seq_len, self.rank_budget, 0
        mine = (text for j, text in enumerate(self.stream.documents()) if j % self.world_size == self.rank)
        carry = np.empty(0, dtype=np.int64)
        for chunk in chunk_documents(mine, self.encode_chars):
            ids = encode_documents(self.tokenizer, chunk)
            if budget is not None:
                ids = ids[: budget - used]
                used += ids.size
            carry = np.concatenate([carry, ids])
            n = (carry.size - 1) // seq
            for k in range(n):
                yield carry[k * seq : k * seq + seq + 1]
            carry = carry[n * seq :]
            if budget is not None and used >= budget:
                return


def head_documents(documents: Iterator[str], tokenizer: Tokenizer, max_tokens: int | None):
    """``(ids, n_bytes, n_documents)`` of the first documents whose tokens reach ``max_tokens``
    (whole documents, so the byte count is exact; all of them for ``None``)."""
    parts, n_tokens, n_bytes, n_docs = [], 0, 0, 0
    for chunk in chunk_documents(documents, ENCODE_CHARS if max_tokens is None else 1):
        ids = encode_documents(tokenizer, chunk)
        parts.append(ids)
        n_tokens += ids.size
        n_bytes += sum(len(t.encode("utf-8")) for t in chunk)
        n_docs += len(chunk)
        if max_tokens is not None and n_tokens >= max_tokens:
            break
    ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return ids, n_bytes, n_docs
