"""Evaluation plans: the whole split once (full_split_*) and windows spread over it (spread_*)."""

import numpy as np
import pytest
import torch

from hyperconn.data.batching import (
    full_split_batches,
    full_split_plan,
    rank_share,
    spread_batches,
    spread_plan,
    spread_starts,
)

CASES = [(1000, 10, 7), (1001, 10, 7), (17, 16, 1), (18, 16, 3), (100, 7, 3), (50, 9, 64), (257, 16, 4)]


@pytest.mark.parametrize(("n", "seq_len", "batch_size"), CASES)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_full_split_scores_every_target_exactly_once(n, seq_len, batch_size, world_size):
    tokens = np.arange(n, dtype=np.int64) * 3 + 5  # distinct values: a target's value names its position
    per_rank = []
    for rank in range(world_size):
        targets = []
        for x, y in full_split_batches(tokens, seq_len, batch_size, rank, world_size):
            assert x.shape == y.shape and x.shape[0] <= batch_size and x.shape[1] <= seq_len
            assert torch.equal(y, x + 3)  # y is x shifted by one position
            targets += y.flatten().tolist()
        per_rank.append(targets)
    flat = [t for targets in per_rank for t in targets]
    assert sorted(flat) == tokens[1:].tolist()  # the multiset of targets is tokens[1:]: each once
    assert sum(len(set(t)) for t in per_rank) == len(set(flat))  # ranks are disjoint
    n_batches = [len(rank_share(full_split_plan(n, seq_len, batch_size), r, world_size)) for r in range(world_size)]
    assert max(n_batches) - min(n_batches) <= 1


@pytest.mark.parametrize(("n", "seq_len", "batch_size"), CASES)
def test_full_split_plan_windows_are_consecutive(n, seq_len, batch_size):
    plan = full_split_plan(n, seq_len, batch_size)
    starts = np.concatenate([b.starts for b in plan])
    lengths = np.concatenate([np.full(len(b.starts), b.length) for b in plan])
    assert starts[0] == 0 and np.array_equal(starts[1:], np.cumsum(lengths)[:-1])  # back to back
    assert sum(b.targets for b in plan) == n - 1
    assert (lengths[:-1] == seq_len).all() and 1 <= lengths[-1] <= seq_len
    assert all(len(b.starts) <= batch_size for b in plan)


@pytest.mark.parametrize(("n", "seq_len", "k"), [(1000, 10, 7), (1001, 16, 2), (100, 7, 14), (100, 7, 99), (17, 16, 5)])
def test_spread_windows_cover_the_split_evenly(n, seq_len, k):
    starts = spread_starts(n, seq_len, k)
    expected = min(k, (n - 1) // seq_len)
    assert len(starts) == expected
    assert starts[0] == 0
    if expected > 1:
        assert starts[-1] + seq_len == n - 1  # the last window's last target is the final token
        gaps = np.diff(starts)
        assert gaps.min() >= seq_len  # distinct, targets never overlap
        assert gaps.max() - gaps.min() <= 1  # evenly strided
    assert starts.min() >= 0 and starts.max() + seq_len + 1 <= n  # in range


def test_spread_is_not_the_first_windows():
    starts = spread_starts(10_000, 16, 8)
    assert starts[-1] > 9_000 and np.array_equal(starts, np.arange(8) * (10_000 - 17) // 7)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_spread_batches_shard_over_ranks(world_size):
    tokens = np.arange(2000, dtype=np.int64)
    single = torch.cat([x[:, 0] for x, _ in spread_batches(tokens, 12, 4, 22)])
    assert torch.equal(single, torch.from_numpy(spread_starts(2000, 12, 22)))
    shards = [list(spread_batches(tokens, 12, 4, 22, r, world_size)) for r in range(world_size)]
    merged = torch.cat([x[:, 0] for shard in shards for x, _ in shard])
    assert torch.equal(merged, single)  # disjoint, complete, in order
    assert all(x.shape[1] == 12 and torch.equal(y, x + 1) for shard in shards for x, y in shard)
    assert sum(len(b.starts) for b in spread_plan(2000, 12, 4, 22)) == 22


def test_bad_plan_arguments_are_named():
    with pytest.raises(ValueError, match="n_windows=0"):
        spread_starts(100, 8, 0)
    with pytest.raises(ValueError, match=r"has 16 tokens.*seq_len \+ 1 = 17"):
        full_split_plan(16, 16, 1)
    with pytest.raises(ValueError, match="batch_size=0"):
        next(full_split_batches(np.arange(100), 8, 0))
    with pytest.raises(ValueError, match="rank=3"):
        rank_share(full_split_plan(100, 8, 2), 3, 3)
