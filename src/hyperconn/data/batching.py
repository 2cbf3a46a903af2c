"""Windows of a token stream for training (random, stateless) and evaluation (fixed, sharded).

Evaluation windows come as a *plan*, a list of :class:`EvalBatch`: :func:`full_split_plan` scores
every token of the split once (the final evaluation of a run), :func:`spread_plan` a fixed number
of windows spread evenly over it (periodic evaluations, diagnostics); :func:`rank_share` gives each
rank its part. ``val_batches`` (the first windows of the split) is the older form.

``tokens`` may be a numpy array, a memmap or any 1-D array-like with ``shape``/``ndim`` and
integer-array indexing (``hyperconn.data.shards.ShardedTokens`` spans several shard files).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from .._optional import require

np = require("numpy", "hyperconn.data")


def _is_index(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(tokens, seq_len: int, batch_size: int, rank: int, world_size: int) -> None:
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array, got shape {tokens.shape}")
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("world_size", world_size)):
        if not _is_index(value) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    if not _is_index(rank) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}: must be an integer in [0, world_size={world_size})")
    if tokens.shape[0] < seq_len + 1:
        raise ValueError(
            f"the token stream has {tokens.shape[0]} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
            "use a shorter seq_len or more data"
        )


def _windows(tokens, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return w[:, :-1], w[:, 1:]


def rank_slice(n_tokens: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)``: rank ``rank``'s contiguous share of ``n_tokens``; the shares are disjoint and
    cover ``[0, n_tokens)``."""
    return rank * n_tokens // world_size, (rank + 1) * n_tokens // world_size


class TokenBatcher:
    """Random training windows from this rank's own slice of the stream.

    Rank ``r`` of ``W`` reads only ``tokens[lo:hi]`` (``rank_slice``: disjoint contiguous slices that
    cover the stream), so ranks never read each other's pages. ``batch(step, micro)`` is a pure
    function of ``(seed, step, micro, rank)``: window starts are drawn uniformly from
    ``[lo, hi - seq_len - 1]`` by ``numpy.random.default_rng([seed, step, micro, rank])``, so a
    resumed run needs only the step."""

    def __init__(self, tokens, seq_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        _check(tokens, seq_len, batch_size, rank, world_size)
        if not _is_index(seed) or seed < 0:
            raise ValueError(f"seed={seed!r}: must be an integer >= 0")
        self.lo, self.hi = rank_slice(int(tokens.shape[0]), rank, world_size)
        if self.hi - self.lo < seq_len + 1:
            raise ValueError(
                f"the token stream has {tokens.shape[0]} tokens: rank {rank}'s slice of {self.hi - self.lo} "
                f"(1/{world_size}) is fewer than seq_len + 1 = {seq_len + 1}; use a shorter seq_len, fewer ranks "
                "or more data"
            )
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, int64 ``(batch_size, seq_len)``, ``y[:, t] = x[:, t + 1]`` continued by one token."""
        if not _is_index(step) or step < 0 or not _is_index(micro) or micro < 0:
            raise ValueError(f"step={step!r}, micro={micro!r}: must be integers >= 0")
        rng = np.random.default_rng([int(self.seed), int(step), int(micro), int(self.rank)])
        starts = rng.integers(self.lo, self.hi - self.seq_len, size=self.batch_size)
        return _windows(self.tokens, starts, self.seq_len)


def val_batches(
    tokens,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic non-overlapping windows: window ``w`` is ``tokens[w*seq_len : (w+1)*seq_len + 1]``.

    Windows are grouped into full batches of ``min(batch_size, n_windows // world_size)``; batch ``b``
    goes to rank ``b % world_size``. ``max_batches`` caps the batches over ALL ranks; the total is
    rounded down to a multiple of ``world_size`` so every rank yields the same number, and the windows
    covered do not depend on ``world_size`` when the counts divide evenly.
    """
    _check(tokens, seq_len, batch_size, rank, world_size)
    if max_batches is not None and (not _is_index(max_batches) or max_batches < 1):
        raise ValueError(f"max_batches={max_batches!r}: must be None or an integer >= 1")
    n_windows = (tokens.shape[0] - 1) // seq_len
    per_batch = min(batch_size, n_windows // world_size)
    if per_batch < 1:
        raise ValueError(
            f"the token stream has {tokens.shape[0]} tokens: {n_windows} windows of seq_len {seq_len}, "
            f"fewer than world_size = {world_size}"
        )
    total = n_windows // per_batch
    if max_batches is not None:
        total = min(total, max_batches)
    total -= total % world_size
    for b in range(rank, total, world_size):
        starts = (b * per_batch + np.arange(per_batch)) * seq_len
        yield _windows(tokens, starts, seq_len)


class EvalBatch(NamedTuple):
    """One evaluation batch: windows starting at ``starts``, each scoring ``length`` targets.

    Window ``s`` reads ``tokens[s : s + length + 1]``: inputs ``tokens[s : s + length]``, targets
    ``tokens[s + 1 : s + length + 1]``."""

    starts: np.ndarray
    length: int

    @property
    def targets(self) -> int:
        return int(self.starts.shape[0]) * self.length


def _check_plan(n_tokens: int, seq_len: int, batch_size: int) -> None:
    for name, value in (("n_tokens", n_tokens), ("seq_len", seq_len), ("batch_size", batch_size)):
        if not _is_index(value) or value < 1:
            raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    if n_tokens < seq_len + 1:
        raise ValueError(
            f"the token stream has {n_tokens} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
            "use a shorter seq_len or more data"
        )


def full_split_plan(n_tokens: int, seq_len: int, batch_size: int) -> list[EvalBatch]:
    """Batches that score every target of a stream of ``n_tokens`` tokens exactly once.

    The targets are ``tokens[1:]`` (the first token is predicted by nothing): window ``w`` has
    inputs ``tokens[w*L : (w+1)*L]`` and targets ``tokens[w*L + 1 : (w+1)*L + 1]`` (``L = seq_len``),
    for ``w < ceil((n_tokens - 1) / L)``; the last window is shorter when ``L`` does not divide
    ``n_tokens - 1``. The full windows come in batches of ``batch_size`` (the last may be smaller),
    then the short window alone, so ``sum(b.targets) == n_tokens - 1``."""
    _check_plan(n_tokens, seq_len, batch_size)
    n_full, tail = divmod(n_tokens - 1, seq_len)
    plan = [
        EvalBatch(np.arange(lo, min(lo + batch_size, n_full), dtype=np.int64) * seq_len, seq_len)
        for lo in range(0, n_full, batch_size)
    ]
    if tail:
        plan.append(EvalBatch(np.array([n_full * seq_len], dtype=np.int64), tail))
    return plan


def spread_starts(n_tokens: int, seq_len: int, n_windows: int) -> np.ndarray:
    """Starts of ``k = min(n_windows, (n_tokens - 1) // seq_len)`` full windows spread evenly over the stream.

    ``start_i = floor(i * (n_tokens - 1 - L) / (k - 1))`` for ``i < k`` (``start_0 = 0`` when
    ``k = 1``): the first window begins the stream, the last ends it (its last target is the final
    token), and since the stride is at least ``L`` the windows' targets never overlap."""
    _check_plan(n_tokens, seq_len, 1)
    if not _is_index(n_windows) or n_windows < 1:
        raise ValueError(f"n_windows={n_windows!r}: must be an integer >= 1")
    k = min(n_windows, (n_tokens - 1) // seq_len)
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    return np.arange(k, dtype=np.int64) * (n_tokens - 1 - seq_len) // (k - 1)


def spread_plan(n_tokens: int, seq_len: int, batch_size: int, n_windows: int) -> list[EvalBatch]:
    """The windows of :func:`spread_starts` in batches of ``batch_size`` (the last may be smaller)."""
    _check_plan(n_tokens, seq_len, batch_size)
    starts = spread_starts(n_tokens, seq_len, n_windows)
    return [EvalBatch(starts[lo : lo + batch_size], seq_len) for lo in range(0, len(starts), batch_size)]


def rank_share(plan: list[EvalBatch], rank: int = 0, world_size: int = 1) -> list[EvalBatch]:
    """Rank ``rank``'s contiguous share of ``plan`` (:func:`rank_slice` over the batches): the shares
    are disjoint and cover the plan; their sizes differ by at most one batch (some may be empty)."""
    if not _is_index(world_size) or world_size < 1:
        raise ValueError(f"world_size={world_size!r}: must be an integer >= 1")
    if not _is_index(rank) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}: must be an integer in [0, world_size={world_size})")
    lo, hi = rank_slice(len(plan), rank, world_size)
    return plan[lo:hi]


def read_batch(tokens, batch: EvalBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``, int64 ``(len(batch.starts), batch.length)``, ``y[:, t] = tokens[start + t + 1]``."""
    return _windows(tokens, batch.starts, batch.length)


def full_split_batches(
    tokens, seq_len: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of :func:`full_split_plan`: over all ranks every target ``tokens[1:]``
    is scored exactly once (ranks may get one batch more or less than each other)."""
    _check(tokens, seq_len, batch_size, rank, world_size)
    for batch in rank_share(full_split_plan(int(tokens.shape[0]), seq_len, batch_size), rank, world_size):
        yield read_batch(tokens, batch)


def spread_batches(
    tokens, seq_len: int, batch_size: int, n_windows: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of :func:`spread_plan`: ``n_windows`` windows spread over the stream, all ranks."""
    _check(tokens, seq_len, batch_size, rank, world_size)
    for batch in rank_share(spread_plan(int(tokens.shape[0]), seq_len, batch_size, n_windows), rank, world_size):
        yield read_batch(tokens, batch)
