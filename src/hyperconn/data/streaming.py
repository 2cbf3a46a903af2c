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
sees the same batches as the uninterrupted one, at the cost of that replay. With ``prefetch`` the
next batches are tokenised in a background thread while the step runs (``prefetch.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count

import torch

from .._optional import require
from .chunks import ENCODE_CHARS, chunk_documents
from .prefetch import Prefetcher
from .tokenizers import Tokenizer, encode_documents

np = require("numpy", "hyperconn.data")

STREAM_PREFETCH = 4  # batches the trainer's stream tokenises ahead: enough to hide one slow chunk


@dataclass(frozen=True)
class TrainStream:
    """The training documents of a source, read afresh by every call of ``documents()``."""

    documents: Callable[[], Iterator[str]]
    description: str
    max_tokens: int | None = None  # per pass, over all ranks
    shuffle_windows: int = 256


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Plan:
    """Everything that determines a rank's window stream (and nothing else: the prefetch thread
    holds this, not the batcher, so a dropped batcher can be collected and its thread stopped)."""

    stream: TrainStream
    tokenizer: Tokenizer
    seq_len: int
    batch_size: int
    seed: int
    rank: int
    world_size: int
    rank_budget: int | None
    encode_chars: int


class StreamingBatcher:
    """``batch(step, micro) -> (x, y)`` like ``TokenBatcher``, tokenising on the fly (see module doc).

    ``prefetch > 0`` tokenises that many batches ahead in a background thread (same values)."""

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
        prefetch: int = 0,
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
        if not _is_int(prefetch) or prefetch < 0:
            raise ValueError(f"prefetch={prefetch!r}: must be an integer >= 0 (batches tokenised ahead; 0: none)")
        rank_budget = None if stream.max_tokens is None else stream.max_tokens // world_size
        if rank_budget is not None and rank_budget < seq_len + 1:
            raise ValueError(
                f"max_tokens={stream.max_tokens} over {world_size} rank(s) leaves {rank_budget} tokens per "
                f"rank and pass, fewer than seq_len + 1 = {seq_len + 1}"
            )
        self.plan = _Plan(stream, tokenizer, seq_len, batch_size, seed, rank, world_size, rank_budget, encode_chars)
        self.micro_steps, self.prefetch = micro_steps, prefetch
        self._batches: Iterator[np.ndarray] | None = None
        self._stop_thread: weakref.finalize | None = None
        self._next = 0  # the position the live iterator stands at
        self.replays = 0  # how many times a re-seek replayed the stream (a resume does once)

    @property
    def rank_budget(self) -> int | None:
        """Tokens per pass on this rank (``max_tokens // world_size``), None without a budget."""
        return self.plan.rank_budget

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if not _is_int(step) or step < 0 or not _is_int(micro) or not 0 <= micro < self.micro_steps:
            raise ValueError(
                f"step={step!r}, micro={micro!r}: must be integers, step >= 0, 0 <= micro < {self.micro_steps}"
            )
        position = int(step) * self.micro_steps + int(micro)
        if self._batches is None or position != self._next:
            if self._batches is not None or position > 0:
                self.replays += 1
            self.close()
            self._batches = self._open(position)
        rows = next(self._batches)
        self._next = position + 1
        w = torch.from_numpy(rows.astype(np.int64))
        return w[:, :-1], w[:, 1:]

    def close(self) -> None:
        """Stop the prefetch thread, if any (the next ``batch`` starts a new one); also run when the
        batcher is garbage-collected."""
        if self._stop_thread is not None:
            self._stop_thread()
            self._stop_thread = None
        self._batches = None

    def _open(self, position: int) -> Iterator[np.ndarray]:
        if not self.prefetch:
            return _batches(self.plan, position)
        plan = self.plan
        prefetcher = Prefetcher(lambda: _batches(plan, position), self.prefetch)
        self._stop_thread = weakref.finalize(self, prefetcher.close)
        return prefetcher


def _batches(plan: _Plan, position: int) -> Iterator[np.ndarray]:
    """Batches from ``position`` on: the stream replayed from the start, ``position`` batches skipped."""
    windows = _window_stream(plan)
    for _ in range(position * plan.batch_size):
        next(windows)
    while True:
        yield np.stack([next(windows) for _ in range(plan.batch_size)])


def _window_stream(plan: _Plan) -> Iterator[np.ndarray]:
    size = plan.stream.shuffle_windows
    for epoch in count():
        rng = np.random.default_rng([plan.seed, plan.rank, epoch])
        buffer: list[np.ndarray] = []
        produced = False
        for window in _pass_windows(plan):
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
                f"{plan.stream.description}: rank {plan.rank} of {plan.world_size} has fewer than "
                f"seq_len + 1 = {plan.seq_len + 1} training tokens; use more data, fewer ranks or a shorter seq_len"
            )


def _pass_windows(plan: _Plan) -> Iterator[np.ndarray]:
    """One pass: this rank's documents packed into windows of seq_len + 1, stride seq_len."""
    seq, budget, used = plan.seq_len, plan.rank_budget, 0
    mine = (text for j, text in enumerate(plan.stream.documents()) if j % plan.world_size == plan.rank)
    carry = np.empty(0, dtype=np.int64)
    for chunk in chunk_documents(mine, plan.encode_chars):
        ids = encode_documents(plan.tokenizer, chunk)
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
