"""Learned expansion and readout: exact at init, restored by reset_parameters, and what they change
(the first and last H_res get a gradient, which copy / sum give them none of)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.support import perturb

from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig
from hyperconn.model.ends import LearnedExpand, LearnedReadout, make_expand, make_readout

VOCAB = 50


def config(kind="shc", streams=4, **conn) -> ModelConfig:
    return ModelConfig(
        vocab_size=VOCAB, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=24, max_seq_len=32,
        connection=ConnectionConfig(kind, streams, **conn),
    )  # fmt: skip


def test_the_end_modules():
    h = torch.randn(2, 3, 5, dtype=torch.float64)
    expand = make_expand("learned", 4, 5).double()
    perturb(expand.parameters())
    want = torch.stack([expand.gain[i] * h + expand.offset[i] for i in range(4)], dim=-2)
    torch.testing.assert_close(expand(h), want, rtol=0, atol=1e-15)
    readout = make_readout("learned", 4).double()
    perturb(readout.parameters())
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(readout(x), sum(readout.weight[j] * x[..., j, :] for j in range(4)), rtol=0, atol=1e-14)
    assert torch.equal(make_expand("copy", 4, 5)(h), h.unsqueeze(-2).expand(2, 3, 4, 5))
    assert torch.equal(make_readout("sum", 4)(x), x.sum(-2))
    with pytest.raises(ValueError, match="expand must be one of copy, learned, got 'mean'"):
        make_expand("mean", 4, 5)
    with pytest.raises(ValueError, match="readout must be one of sum, learned, got 'mean'"):
        make_readout("mean", 4)


@pytest.mark.parametrize(("kind", "streams"), [("hc", 3), ("mhc", 4), ("shc", 4), ("kromhc", 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_learned_ends_start_exactly_as_copy_and_sum(kind, streams, dtype):
    plain_cfg = config(kind, streams, skip_inert=False)
    learned_cfg = config(kind, streams, skip_inert=False, expand="learned", readout="learned")
    torch.manual_seed(0)
    plain = LanguageModel(plain_cfg).to(dtype)
    learned = LanguageModel(learned_cfg).to(dtype)
    missing, unexpected = learned.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["expand.gain", "expand.offset", "readout.weight"] and not unexpected
    idx = torch.randint(0, VOCAB, (2, 9))
    assert torch.equal(learned(idx), plain(idx))


def test_learned_ends_reset_and_deferred_init():
    cfg = config(expand="learned", readout="learned")
    model = LanguageModel(cfg)
    perturb([*model.expand.parameters(), *model.readout.parameters()])
    model.reset_parameters()
    assert torch.equal(model.expand.gain, torch.ones(4)) and torch.equal(model.expand.offset, torch.zeros(4, 16))
    assert torch.equal(model.readout.weight, torch.ones(4))
    with torch.device("meta"):
        deferred = LanguageModel(cfg)
    deferred.to_empty(device="cpu")
    torch.manual_seed(0)
    deferred.reset_parameters()
    torch.manual_seed(0)
    model.reset_parameters()
    for name, value in deferred.state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name


def res_parameters(conn) -> list[torch.Tensor]:
    """The gradients of a coefficient connection's H_res parameters (projection columns, biases and
    gates past the 2n pre/post coefficients; sHC's gamma)."""
    n = conn.num_streams
    grads = [conn.proj.grad[:, 2 * n :], conn.bias.grad[2 * n :], conn.gates.grad[2:]]
    if getattr(conn, "gamma", None) is not None:
        grads.append(conn.gamma.grad)
    return [g.reshape(-1) for g in grads]


def end_res_gradients(cfg: ModelConfig, perturb_ends: bool) -> tuple[float, float, float]:
    """``(first, last, middle)``: the largest |gradient| of the first, last and a middle
    connection's H_res parameters in float64, every connection moved off its init."""
    torch.manual_seed(0)
    model = LanguageModel(cfg).double()
    perturb([p for c in model.connections() for p in c.parameters()])
    if perturb_ends:
        perturb([*model.expand.parameters(), *model.readout.parameters()], scale=0.5, seed=1)
    idx = torch.randint(0, VOCAB, (2, 9))
    torch.nn.functional.cross_entropy(model(idx).reshape(-1, VOCAB), idx.reshape(-1)).backward()
    conns = model.connections()
    return tuple(float(torch.cat(res_parameters(c)).abs().max()) for c in (conns[0], conns[-1], conns[1]))


@pytest.mark.parametrize(("kind", "streams"), [("shc", 4), ("shc", 3), ("mhc_lite", 3), ("kromhc", 4)])
def test_copy_and_sum_give_the_end_h_res_no_gradient_learned_ends_do(kind, streams):
    # (kromhc's -8 bias keeps its softmax near saturation: all its H_res gradients are small)
    first, last, middle = end_res_gradients(config(kind, streams, skip_inert=False), perturb_ends=False)
    assert first <= 1e-12 * middle and last <= 1e-12 * middle and middle > 1e-8
    learned = config(kind, streams, skip_inert=False, expand="learned", readout="learned")
    first, last, middle = end_res_gradients(learned, perturb_ends=True)
    assert first > 1e-3 * middle and last > 1e-3 * middle


def test_mhc_last_h_res_has_no_gradient_under_the_sum_readout():
    """mHC's rows sum to 1 exactly (last Sinkhorn step): the readout end is inert; its columns only
    to the Sinkhorn error, so the first connection's H_res does get a (small) gradient."""
    first, last, middle = end_res_gradients(config("mhc", 4, skip_inert=False), perturb_ends=False)
    assert last <= 1e-12 * middle and middle > 1e-8
    first, last, middle = end_res_gradients(config("mhc", 4, skip_inert=False, readout="learned"), perturb_ends=True)
    assert last > 1e-3 * middle


def test_gradients_reach_the_end_parameters():
    model = LanguageModel(config(expand="learned", readout="learned")).double()
    perturb([p for c in model.connections() for p in c.parameters()])
    idx = torch.randint(0, VOCAB, (2, 9))
    model(idx).square().mean().backward()
    for p in (model.expand.gain, model.expand.offset, model.readout.weight):
        assert p.grad is not None and p.grad.abs().max() > 0
    assert isinstance(model.expand, LearnedExpand) and isinstance(model.readout, LearnedReadout)


@pytest.mark.parametrize("end", ["expand", "readout"])
def test_learned_ends_need_several_streams(end):
    for kind, streams in (("residual", 1), ("hc", 1)):
        cfg = dataclasses.replace(ConnectionConfig(kind, streams), **{end: "learned"})
        with pytest.raises(ValueError, match=f"model.connection.{end}='learned' needs a multi-stream connection"):
            cfg.validate()
    with pytest.raises(ValueError, match=f"model.connection.{end} must be one of"):
        dataclasses.replace(ConnectionConfig("shc"), **{end: "mean"}).validate()
