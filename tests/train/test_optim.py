"""The weight-decay split and the learning-rate schedule."""

from __future__ import annotations

from itertools import pairwise

import pytest
from torch import nn

from hyperconn.connections import HyperConnection
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig
from hyperconn.train.optim import decay_groups, lr_at


def model(kind, streams, tie=False):
    cfg = ModelConfig(
        vocab_size=40,
        dim=16,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        head_dim=8,
        mlp_dim=24,
        max_seq_len=16,
        tie_embeddings=tie,
        connection=ConnectionConfig(kind, streams),
    )
    return LanguageModel(cfg)


@pytest.mark.parametrize(("kind", "streams", "tie"), [("shc", 4, False), ("hc", 3, True), ("mhc", 2, False)])
def test_decay_split(kind, streams, tie):
    m = model(kind, streams, tie)
    decay, no_decay = decay_groups(m)
    ids_decay, ids_no = {id(p) for p in decay}, {id(p) for p in no_decay}
    assert not ids_decay & ids_no
    assert ids_decay | ids_no == {id(p) for p in m.parameters()}  # every parameter, once
    for module_name, module in m.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, (nn.RMSNorm, nn.Embedding)):
                assert id(p) in ids_no, f"{module_name}.{name}"
            elif isinstance(module, HyperConnection):
                expected = ids_decay if name.endswith("proj") else ids_no  # gates, biases, gains, gamma: none
                assert id(p) in expected, f"{module_name}.{name}"
            elif isinstance(module, nn.Linear) and not (tie and module is m.head):
                assert id(p) in ids_decay, f"{module_name}.{name}"
    assert (id(m.head.weight) in ids_no) == tie


def test_lr_schedule():
    lrs = [lr_at(s, 1.0, 0.1, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(lrs[:10]))  # warm-up rises
    assert all(a >= b for a, b in pairwise(lrs[9:]))  # cosine falls
    assert lr_at(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)  # the floor at the end
    assert lr_at(55, 1.0, 0.1, 10, 100) == pytest.approx(0.55)  # half-way: the mean of peak and floor
