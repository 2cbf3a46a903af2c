"""Data parallelism in one process: the mode chosen from (world size, train.fsdp), the plain path's
state dicts (exactly ``state_dict()``, round-tripping bit for bit through a checkpoint), and the
optimizer-state check. DDP and FSDP2 across two ranks: test_distributed.py."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.support import TINY

from hyperconn.train import TrainConfig
from hyperconn.train.build import build_model, build_plain
from hyperconn.train.checkpoint import read_checkpoint, save_checkpoint
from hyperconn.train.distributed import DistInfo
from hyperconn.train.loss import lm_loss
from hyperconn.train.optim import build_optimizer
from hyperconn.train.parallel import DataParallel

TINY_TIED = {**TINY, "tie_embeddings": True}
ONE = DistInfo()  # world size 1 on the CPU


def cfg(seed: int = 3) -> TrainConfig:
    model = {**TINY_TIED, "connection": {"kind": "shc"}}  # n = 4, the kind's default
    return TrainConfig.from_dict({"preset": "demo", "model": model, "train": {"seed": seed, "seq_len": 8}}).validate()


def step(model, optimizer, seed: int) -> None:
    tokens = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(seed))
    lm_loss(model, tokens[:, :-1], tokens[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trained(seed: int = 3):
    model = build_plain(cfg(seed), seed)
    optimizer = build_optimizer(model, 1e-2, (0.9, 0.95), 0.1)
    for i in range(2):
        step(model, optimizer, 100 + i)
    return model, optimizer


def params_equal(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize(
    ("world", "fsdp", "mode"),
    [(1, False, "none"), (1, True, "none"), (2, False, "ddp"), (2, True, "fsdp"), (8, True, "fsdp")],
)
def test_the_mode_follows_the_world_size_and_train_fsdp(world, fsdp, mode):
    parallel = DataParallel(DistInfo(world_size=world), fsdp)
    assert parallel.mode == mode
    assert parallel.sharded == (mode == "fsdp")


@pytest.mark.parametrize("fsdp", [False, True])
def test_at_world_size_one_the_loop_calls_the_model_itself(fsdp):
    c = cfg()
    c.train.fsdp = fsdp
    raw, model = build_model(c, DataParallel(ONE, fsdp))
    assert model is raw
    assert params_equal(raw, build_plain(cfg(), 3))  # the plain build, not a sharded one


def test_fsdp_refuses_to_wrap_a_model_that_was_not_built_sharded():
    with pytest.raises(ValueError, match="train.fsdp=true needs the model built sharded.*LanguageModel"):
        DataParallel(DistInfo(world_size=2), fsdp=True).wrap(build_plain(cfg(), 3))


def test_the_plain_state_dicts_are_the_modules_own():
    model, optimizer = trained()
    parallel = DataParallel(ONE, fsdp=False)
    weights, expected = parallel.model_state(model), model.state_dict()
    assert list(weights) == list(expected)
    assert all(weights[k].data_ptr() == expected[k].data_ptr() for k in expected)  # the weights, not copies
    state, own = parallel.optimizer_state(model, optimizer), optimizer.state_dict()
    assert state["param_groups"] == own["param_groups"]
    assert set(state["state"]) == set(own["state"]) == set(range(len(list(model.parameters()))))
    for index, entry in own["state"].items():
        assert all(state["state"][index][k] is v for k, v in entry.items())  # the moments themselves


def test_the_plain_state_round_trips_bit_for_bit_through_a_checkpoint(tmp_path):
    """Saved, read back into a model and optimizer built from another seed: the same parameters,
    and the next step (which reads AdamW's moments and step count) the same too."""
    parallel = DataParallel(ONE, fsdp=False)
    model, optimizer = trained()
    ckpt = save_checkpoint(tmp_path, 2, parallel.model_state(model), parallel.optimizer_state(model, optimizer))
    weights, state = read_checkpoint(ckpt)
    assert "head.weight" not in weights  # tied: stored once, its name restored on load
    other = build_plain(cfg(seed=9), 9)
    other_opt = build_optimizer(other, 1e-2, (0.9, 0.95), 0.1)
    assert not params_equal(model, other)
    parallel.check_optimizer_state(other, other_opt, state["optimizer"])
    parallel.load_model_state(other, weights, ckpt)
    parallel.load_optimizer_state(other, other_opt, state["optimizer"])
    assert params_equal(model, other)
    assert other.head.weight is other.embed.weight
    step(model, optimizer, 7)
    step(other, other_opt, 7)
    assert params_equal(model, other)


@pytest.mark.slow
def test_weights_that_do_not_fit_are_refused_naming_the_source():
    parallel = DataParallel(ONE, fsdp=False)
    weights = dict(build_plain(cfg(), 3).state_dict())
    weights.pop("norm.weight")
    with pytest.raises(ValueError, match=r"step_7 does not match the model config: missing norm\.weight"):
        parallel.load_model_state(build_plain(cfg(), 3), weights, "step_7")


def _bad_group(state):
    state["param_groups"] = state["param_groups"][:1] + state["param_groups"]


def _bad_index(state):
    state["state"][999] = state["state"][0]


def _name_not_index(state):
    state["state"]["embed.weight"] = state["state"].pop(0)


def _bad_shape(state):
    state["state"][1]["exp_avg"] = state["state"][1]["exp_avg"].flatten()[:3]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_bad_group, "does not match the model's parameter groups"),
        (_bad_index, "names parameter 999, the model has"),
        (_name_not_index, "names parameter 'embed.weight'"),
        (_bad_shape, r"state of parameter 1 has shape \(3,\), the model's is"),
    ],
)
def test_an_optimizer_state_that_does_not_fit_is_refused(corrupt, message):
    model, optimizer = trained()
    parallel = DataParallel(ONE, fsdp=False)
    state = copy.deepcopy(parallel.optimizer_state(model, optimizer))
    parallel.check_optimizer_state(model, optimizer, state)  # its own state fits
    corrupt(state)
    with pytest.raises(ValueError, match=message):
        parallel.check_optimizer_state(model, optimizer, state)
