"""Windows of a token stream for training (random, stateless) and evaluation (fixed, sharded).

``tokens`` may be a numpy array, a memmap or any 1-D array-like with ``shape``/``ndim`` and
integer-array indexing (``hyperconn.data.shards.ShardedTokens`` spans several shard files).
"""

from __future__ import annotations

from collections.abc import Iterator

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
