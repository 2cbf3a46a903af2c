"""`hyperconn train`'s own error lines: a collective broken by a dead rank is one line naming this
rank, other errors keep their traceback."""

from __future__ import annotations

import torch.distributed as dist

from hyperconn.train.commands import collective_failure


def test_a_collective_broken_by_a_dead_rank_is_one_line_naming_this_rank(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:11153: "
        "Connection reset by peer. This is typically caused by a remote worker hanging\nmore lines"
    )
    line = collective_failure(gloo)
    assert line.startswith("rank 0 of 2: a collective with the other ranks failed: another rank died or left")
    assert "Connection reset by peer" in line and "\n" not in line
    assert collective_failure(dist.DistBackendError("NCCL error: remote process exited")) is not None


def test_any_other_runtime_error_is_not_taken_for_one():
    assert collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")) is None
