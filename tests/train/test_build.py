"""The model build: plain and FSDP builds draw the same initial values; what FSDP cannot shard."""

from __future__ import annotations

import pytest
import torch
from tests.support import TINY, small_model

from hyperconn.model import LanguageModel
from hyperconn.train import TrainConfig
from hyperconn.train.build import build_plain, check_shardable, compiled_forward
from hyperconn.train.config import TrainSettings
from hyperconn.train.rundir import RESUMABLE_CHANGES


def cfg(kind: str, streams: int, seed: int = 0) -> TrainConfig:
    model = {**TINY, "connection": {"kind": kind, "num_streams": streams}}
    return TrainConfig.from_dict({"preset": "demo", "model": model, "train": {"seed": seed, "seq_len": 8}}).validate()


def test_the_plain_build_is_reset_parameters_after_seeding():
    """The FSDP build can only reproduce draws made from a fresh seed, not the constructor's."""
    a, b = build_plain(cfg("shc", 4, seed=5), 5), build_plain(cfg("shc", 4, seed=5), 5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with torch.device("meta"):
        deferred = LanguageModel(cfg("shc", 4).model)
    deferred.to_empty(device="cpu")
    torch.manual_seed(5)
    deferred.reset_parameters()
    for (name, x), y in zip(a.state_dict().items(), deferred.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(a.embed.weight, build_plain(cfg("shc", 4, seed=6), 6).embed.weight)


def test_fsdp_refuses_a_model_with_scalar_parameters_by_name():
    with torch.device("meta"):
        models = {kind: LanguageModel(cfg(kind, n).model) for kind, n in [("hc", 2), ("shc", 4), ("mhc", 4)]}
    for kind, model in models.items():
        check_shardable(model, kind)  # every kind's parameters have a dim 0 (hc's gates are 1-element vectors)
    models["hc"].blocks[0].attn_conn.register_parameter("scalar", torch.nn.Parameter(torch.zeros(())))
    with pytest.raises(ValueError, match=r"cannot shard connection kind 'hc': FSDP2 refuses 0-d .*scalar"):
        check_shardable(models["hc"], "hc")


def test_every_resumable_key_is_a_train_setting():
    fields = set(TrainSettings.__dataclass_fields__)
    assert set(RESUMABLE_CHANGES) <= fields
    assert "lr" not in RESUMABLE_CHANGES and "seed" not in RESUMABLE_CHANGES  # these change the run


def test_compiled_forward_is_regional_for_the_language_model():
    """A hyperconn model is compiled block by block in place (the loop keeps calling the module it
    had, whose state-dict keys are unchanged); any other module is compiled whole."""
    model = small_model("shc")
    keys = list(model.state_dict())
    assert compiled_forward(model, model, sharded=False) is model
    assert list(model.state_dict()) == keys
    sharded = small_model("shc")
    assert compiled_forward(sharded, sharded, sharded=True) is not sharded  # FSDP: compiled whole
    other = torch.nn.Linear(3, 2)
    whole = compiled_forward(other, other, sharded=False)
    assert whole is not other
    x = torch.randn(4, 3)
    torch.testing.assert_close(whole(x), other(x))
