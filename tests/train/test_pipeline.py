"""A pipeline stage is built alone (meta device, pruned, allocated for the stage only) and starts
from exactly the values the plain one-process build gives its parameters and buffers. The stages
training together: test_scale_out.py."""

from __future__ import annotations

import pytest
import torch
from tests.support import TINY

from hyperconn.model import LanguageModel
from hyperconn.train import TrainConfig
from hyperconn.train.build import build_plain
from hyperconn.train.pipeline import init_stage, prune_to_stage, stage_blocks

CASES = [("residual", 1, {}), ("mhc", 4, {}), ("shc", 4, {}), ("shc", 1, {"num_fracs": 2}),
         ("hc", 2, {"expand": "learned", "readout": "learned"})]  # fmt: skip


@pytest.mark.parametrize(("kind", "n", "extra"), CASES)
def test_each_stage_starts_from_the_plain_builds_values(kind, n, extra):
    connection = {"kind": kind, "num_streams": n, **extra}
    model = {**TINY, "n_layers": 4, "connection": connection}
    cfg = TrainConfig.from_dict({"preset": "demo", "model": model, "train": {"seed": 5, "seq_len": 8}}).validate()
    plain = build_plain(cfg, 5)
    expected = {**dict(plain.named_parameters()), **dict(plain.named_buffers())}
    seen = set()
    for s in range(2):
        with torch.device("meta"):
            stage = LanguageModel(cfg.model)
        prune_to_stage(stage, 2, s)
        stage.to_empty(device="cpu")
        init_stage(stage, cfg)
        got = {**dict(stage.named_parameters()), **dict(stage.named_buffers())}
        assert {k.split(".")[1] for k in got if k.startswith("blocks.")} == {str(i) for i in stage_blocks(4, 2, s)}
        for name, value in got.items():
            assert torch.equal(value, expected[name]), name
        seen |= set(got)
    assert seen == set(expected)  # the two stages hold the whole model between them
