"""The evaluation plans in the trainer: the whole split at the end (DONE), spread windows periodically."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hyperconn.train.evaluation as evaluation
from hyperconn.data import prepare_data
from hyperconn.data.batching import spread_starts
from hyperconn.train import distributed as D
from hyperconn.train import evaluate, evaluate_loss, read_done, read_metrics, train, validation_loss
from hyperconn.train.evaluation import bits_per_byte

VOCAB = 11


class Unigram(nn.Module):
    """Logits depend on the current token only, so each target's loss is independent of its window."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(VOCAB, VOCAB)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.table(x)


def naive_loss(model, tokens) -> float:
    t = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    with torch.no_grad():
        return F.cross_entropy(model.table(t[:-1]), t[1:]).item()


@pytest.fixture
def stream():
    torch.manual_seed(0)
    return np.random.default_rng(0).integers(0, VOCAB, size=203)


def test_the_full_split_loss_equals_the_loss_over_the_whole_stream(stream):
    model = Unigram()
    result = evaluate_loss(model, stream, seq_len=8, batch_size=3)
    assert result.tokens == len(stream) - 1
    assert result.loss == pytest.approx(naive_loss(model, stream), rel=1e-6)
    assert validation_loss(model, stream, 8, 3) == result.loss


def test_spread_evaluation_scores_the_spread_windows(stream):
    model = Unigram()
    result = evaluate_loss(model, stream, seq_len=8, batch_size=3, max_batches=2)
    starts = spread_starts(len(stream), 8, 6)
    assert result.tokens == 6 * 8
    t = torch.from_numpy(stream.astype(np.int64))
    idx = torch.from_numpy(starts)[:, None] + torch.arange(9)
    with torch.no_grad():
        expected = F.cross_entropy(model.table(t[idx[:, :-1]]).reshape(-1, VOCAB), t[idx[:, 1:]].reshape(-1)).item()
    assert result.loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 3), (3, 3), (3, 40)])
def test_ranks_sum_to_the_whole_split_with_equal_forward_passes(stream, monkeypatch, world_size, batch_size):
    model = Unigram()
    reduced = []
    monkeypatch.setattr(evaluation.D, "all_reduce_sum", lambda value, info: reduced.append(value) or value)
    passes = []
    for rank in range(world_size):
        model.calls = 0
        with contextlib.suppress(ValueError):  # a rank that scored nothing has zero targets locally
            evaluate_loss(model, stream, 8, batch_size, info=D.DistInfo(rank=rank, world_size=world_size))
        passes.append(model.calls)
    assert len(reduced) == world_size  # one all_reduce per rank
    assert len(set(passes)) == 1  # every rank the same number of forward passes (FSDP collectives)
    total = torch.stack(reduced).sum(0)
    assert int(total[1]) == len(stream) - 1
    assert (total[0] / total[1]).item() == pytest.approx(naive_loss(model, stream), rel=1e-6)


def test_bits_per_byte_of_the_full_split():
    assert bits_per_byte(math.log(2), n_tokens=101, val_bytes=100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="val_bytes=0"):
        bits_per_byte(1.0, 10, 0)
    with pytest.raises(ValueError, match="max_batches=0"):
        evaluate_loss(Unigram(), np.arange(50) % VOCAB, 8, 2, max_batches=0)


@pytest.mark.slow
def test_done_reports_the_whole_split(make_cfg):
    cfg = make_cfg("train.eval_batches=1", "train.batch_size=2")
    run = train(cfg)
    data = prepare_data(cfg.data)
    n = data.n_val_tokens
    done = read_done(run)
    assert done == json.loads((run / "DONE").read_text())
    assert done["val_tokens"] == n - 1 and isinstance(done["val_tokens"], int)
    assert done["val_bpb"] == pytest.approx(bits_per_byte(done["val_loss"], n, data.val_bytes))
    evals = [r for r in read_metrics(run) if r["val_loss"] is not None]
    assert [r["step"] for r in evals] == [0, 4, 8]
    assert [r["val_tokens"] for r in evals] == [2 * 16, 2 * 16, n - 1]  # periodic: 1 batch of 2 windows
    assert evals[-1]["val_loss"] == pytest.approx(done["val_loss"]) and evals[-1]["val_bpb"] == done["val_bpb"]
    again = evaluate(run, device="cpu")
    assert again["val_tokens"] == n - 1 and again["val_loss"] == pytest.approx(done["val_loss"], rel=1e-5)
