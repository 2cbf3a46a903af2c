"""TokenBatcher (stateless random windows) and val_batches (fixed windows, sharded)."""

import numpy as np
import pytest
import torch

from hyperconn.data import TokenBatcher, val_batches

TOKENS = np.arange(1000, dtype=np.uint16)  # token value == position, so windows are easy to check


def test_batch_shapes_and_shift():
    x, y = TokenBatcher(TOKENS, seq_len=16, batch_size=5, seed=0).batch(0)
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # contiguous windows of the stream
    assert int(x.min()) >= 0 and int(y.max()) <= len(TOKENS) - 1


def test_batch_is_a_pure_function_of_seed_step_micro_rank():
    a = TokenBatcher(TOKENS, 8, 4, seed=1)
    b = TokenBatcher(TOKENS, 8, 4, seed=1)  # a "resumed" batcher
    for _ in range(3):
        a.batch(0)  # no hidden state advances
    for step in (0, 5, 123):
        assert torch.equal(a.batch(step, 1)[0], b.batch(step, 1)[0])
    seen = {
        TokenBatcher(TOKENS, 8, 4, seed=s, rank=r, world_size=2).batch(t, m)[0][:, 0].numpy().tobytes()
        for s in (1, 2)
        for r in (0, 1)
        for t in (0, 1)
        for m in (0, 1)
    }
    assert len(seen) == 16  # seed, rank, step and micro all change the windows


def test_batches_cover_the_whole_stream():
    tokens = np.arange(50, dtype=np.uint16)
    b = TokenBatcher(tokens, seq_len=9, batch_size=64, seed=0)
    starts = torch.cat([b.batch(s)[0][:, 0] for s in range(20)])
    assert int(starts.min()) == 0 and int(starts.max()) == 50 - 10  # every start reachable, none past the end


def test_val_batches_cover_non_overlapping_windows():
    seq = 10
    batches = list(val_batches(TOKENS, seq, batch_size=7))
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    n_full = ((len(TOKENS) - 1) // seq) // 7 * 7  # full batches only
    assert xs.shape == (n_full, seq)
    assert torch.equal(xs.flatten(), torch.arange(n_full * seq))  # consecutive, non-overlapping, from 0
    assert torch.equal(ys, xs + 1)
    assert list(val_batches(TOKENS, seq, 7)) and len(list(val_batches(TOKENS, seq, 7, max_batches=3))) == 3


@pytest.mark.parametrize("world_size", [2, 3])
def test_val_batches_shard_over_ranks(world_size):
    single = list(val_batches(TOKENS, 10, 4, max_batches=12))
    shards = [
        list(val_batches(TOKENS, 10, 4, max_batches=12, rank=r, world_size=world_size)) for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1  # every rank the same number of batches
    merged = [shards[b % world_size][b // world_size] for b in range(sum(map(len, shards)))]
    assert all(torch.equal(m[0], s[0]) for m, s in zip(merged, single, strict=True))


def test_short_streams_are_refused_with_both_numbers():
    with pytest.raises(ValueError, match=r"has 16 tokens.*seq_len \+ 1 = 17"):
        TokenBatcher(np.arange(16), seq_len=16, batch_size=1, seed=0)
    with pytest.raises(ValueError, match=r"has 16 tokens.*seq_len \+ 1 = 17"):
        next(val_batches(np.arange(16), 16, 1))
    x, y = TokenBatcher(np.arange(17), seq_len=16, batch_size=2, seed=0).batch(0)
    assert torch.equal(x[0], torch.arange(16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 0}, "seq_len=0"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"rank": 2, "world_size": 2}, "rank=2"),
        ({"seed": -3}, "seed=-3"),
    ],
)
def test_bad_batcher_arguments(kwargs, match):
    args = {"tokens": TOKENS, "seq_len": 8, "batch_size": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        TokenBatcher(**args)
    with pytest.raises(ValueError, match="step=-1"):
        TokenBatcher(TOKENS, 8, 2, 0).batch(-1)


@pytest.mark.parametrize(("n", "world_size"), [(1000, 2), (997, 3), (64, 4)])
def test_rank_slices_are_disjoint_and_cover_the_stream(n, world_size):
    tokens = np.arange(n, dtype=np.uint16)
    seq = 8
    reached = []
    for rank in range(world_size):
        b = TokenBatcher(tokens, seq_len=seq, batch_size=256, seed=0, rank=rank, world_size=world_size)
        windows = torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in (b.batch(s) for s in range(40))])
        assert int(windows.min()) == b.lo and int(windows.max()) == b.hi - 1  # all of its slice, nothing else
        reached.append(set(windows.flatten().tolist()))
        assert reached[-1] == set(range(b.lo, b.hi))
    assert set().union(*reached) == set(range(n))
    assert sum(map(len, reached)) == n  # disjoint


def test_single_rank_windows_unchanged_by_slicing():
    # world_size = 1 draws exactly what default_rng([seed, step, micro, 0]) gives over the whole stream
    x, _ = TokenBatcher(TOKENS, 16, 4, seed=3).batch(2, 1)
    starts = np.random.default_rng([3, 2, 1, 0]).integers(0, len(TOKENS) - 16, size=4)
    assert torch.equal(x[:, 0], torch.from_numpy(starts))


def test_rank_slice_shorter_than_a_window_is_named():
    with pytest.raises(ValueError, match=r"rank 1's slice of 15 \(1/2\) is fewer than seq_len \+ 1 = 17"):
        TokenBatcher(np.arange(30), seq_len=16, batch_size=1, seed=0, rank=1, world_size=2)
