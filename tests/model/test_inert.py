"""skip_inert: the model with the inert first / last H_res skipped computes the same function, with
the same gradients on every shared parameter, as the model that keeps them."""

from __future__ import annotations

import pytest
import torch
from tests.support import slow_unless

from hyperconn.connections import connection_parameter_count
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig

VOCAB = 50


def config(kind, streams, n_layers=2, **conn) -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB, dim=16, n_layers=n_layers, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=24, max_seq_len=32,
        connection=ConnectionConfig(kind, streams, **conn),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "conn", "want"),
    [
        ("shc", {}, (True, True)),
        ("mhc_lite", {}, (True, True)),
        ("kromhc", {}, (True, True)),
        ("mhc", {}, (False, True)),  # columns only to the Sinkhorn error
        ("hc", {}, (False, False)),  # H_res free
        ("residual", {}, (False, False)),
        ("shc", {"expand": "learned"}, (False, True)),
        ("shc", {"readout": "learned"}, (True, False)),
        ("shc", {"skip_inert": False}, (False, False)),
    ],
)
def test_which_ends_are_skipped(kind, conn, want):
    streams = 1 if kind == "residual" else 4
    cfg = config(kind, streams, n_layers=3, **conn)
    assert cfg.connection.inert_ends() == want
    mixes = [c.mixes_streams for c in LanguageModel(cfg).connections()]
    assert mixes == [not want[0], True, True, True, True, not want[1]]


def copy_shared(full: LanguageModel, bare: LanguageModel) -> None:
    """``bare``'s parameters from ``full``'s: a skipping connection's projection, biases and gates
    are the first (pre, post) columns of the full ones."""
    params = dict(full.named_parameters())
    with torch.no_grad():
        for name, p in bare.named_parameters():
            p.copy_(params[name][tuple(slice(0, s) for s in p.shape)])


@pytest.mark.parametrize(
    ("kind", "streams"),
    [
        slow_unless((kind, n) in (("shc", 4), ("mhc", 4)), kind, n)
        for kind, n in [("shc", 4), ("shc", 3), ("shc", 2), ("mhc_lite", 3), ("kromhc", 4), ("mhc", 4)]
    ],
)
def test_skipping_changes_nothing_but_the_parameter_count(kind, streams):
    torch.manual_seed(0)
    full = LanguageModel(config(kind, streams, skip_inert=False)).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move every connection far off its init: the skipped H_res are not near I
        for c in full.connections():
            for p in c.parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    bare = LanguageModel(config(kind, streams)).double()
    copy_shared(full, bare)
    first, last = bare.cfg.connection.inert_ends()
    assert (first, last) == ((kind != "mhc"), True)

    full_res = connection_parameter_count(kind, streams, 16) - connection_parameter_count(
        kind, streams, 16, mix_streams=False
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(bare) == (first + last) * full_res > 0

    idx = torch.randint(0, VOCAB, (2, 11))
    targets = torch.randint(0, VOCAB, (2, 11))
    losses = []
    for model in (full, bare):
        logits = model(idx)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        losses.append((logits, loss))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=0, atol=1e-12)
    params = dict(full.named_parameters())
    for name, p in bare.named_parameters():
        want = params[name].grad[tuple(slice(0, s) for s in p.shape)]
        torch.testing.assert_close(p.grad, want, rtol=0, atol=1e-12, msg=name)
    with torch.no_grad():  # the no-grad (decode) path
        torch.testing.assert_close(bare(idx), losses[0][0].detach(), rtol=0, atol=1e-12)


def test_mix_streams_is_not_a_config_option():
    with pytest.raises(ValueError, match="options.mix_streams is set per connection by the model"):
        ConnectionConfig("shc", 4, {"mix_streams": False}).validate()
    with pytest.raises(ValueError, match="skip_inert must be true or false, got 'yes'"):
        ConnectionConfig("shc", 4, skip_inert="yes").validate()


def test_res_init_passes_through_the_model_config():
    cfg = config("mhc_lite", 3, options={"res_init": "uniform"}, skip_inert=False)
    model = LanguageModel(cfg)
    x = torch.randn(2, 3, 16)
    for conn in model.connections():
        torch.testing.assert_close(conn.mixing(x).res, torch.full((2, 3, 3), 1 / 3), rtol=0, atol=1e-6)
