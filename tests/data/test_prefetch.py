"""Prefetcher: order kept, errors re-raised, the thread stops on close; a stream batcher with
prefetch gives exactly the batches of one without, and its thread ends when it is dropped."""

import gc
import threading

import numpy as np
import pytest
import torch

from hyperconn.data import ByteTokenizer, StreamingBatcher, TrainStream
from hyperconn.data.prefetch import Prefetcher

from .conftest import make_text


def _threads():
    return [t for t in threading.enumerate() if t.name == "hyperconn-prefetch"]


def test_items_in_order_and_end():
    p = Prefetcher(lambda: iter(range(50)), depth=3)
    assert list(p) == list(range(50))
    with pytest.raises(StopIteration):
        next(p)
    p.close()


@pytest.mark.slow
def test_error_is_reraised_in_the_consumer():
    def failing():
        yield 1
        raise ValueError("rank 3 has too little data")

    p = Prefetcher(failing, depth=2)
    assert next(p) == 1
    for _ in range(2):  # and again on a later call
        with pytest.raises(ValueError, match="rank 3"):
            next(p)
    p.close()


def test_close_stops_an_endless_producer():
    before = set(_threads())
    p = Prefetcher(lambda: iter(int, 1), depth=2)  # endless
    assert next(p) == 0
    (thread,) = set(_threads()) - before
    p.close()
    assert not thread.is_alive()
    with pytest.raises(ValueError, match="depth=0"):
        Prefetcher(lambda: iter([]), depth=0)


@pytest.mark.slow
def test_streaming_with_prefetch_equals_without_and_stops_when_dropped():
    docs = [make_text(i, 2) for i in range(30)]
    stream = TrainStream(documents=lambda: iter(docs), description="docs", shuffle_windows=4)
    tok = ByteTokenizer()
    before = set(_threads())
    plain = StreamingBatcher(stream, tok, 8, 3, seed=2, micro_steps=2)
    ahead = StreamingBatcher(stream, tok, 8, 3, seed=2, micro_steps=2, prefetch=3)
    order = [(0, 0), (0, 1), (1, 0), (1, 1), (5, 1), (2, 0), (2, 1)]  # in order, a jump, a step back
    for step, micro in order:
        a, b = plain.batch(step, micro), ahead.batch(step, micro)
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert ahead.replays == plain.replays == 2
    mine = set(_threads()) - before
    assert len(mine) == 1  # the re-seeks stopped the earlier threads
    del ahead
    gc.collect()
    for t in mine:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in mine)
    assert np.asarray(plain.batch(3, 0)[0]).shape == (3, 8)
