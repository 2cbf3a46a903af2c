"""Config validation at the edge, and the presets."""

from __future__ import annotations

import re

import pytest

from hyperconn import available_connections
from hyperconn.model import ConnectionConfig, LanguageModel, ModelConfig, available_presets, get_preset


def test_num_streams_default_to_the_kind():
    assert ConnectionConfig("residual").num_streams == 1
    assert ConnectionConfig("shc").num_streams == 4


@pytest.mark.parametrize(
    ("conn", "match"),
    [
        (
            ConnectionConfig("nope", 4),
            "unknown connection kind 'nope'; choose one of " + ", ".join(available_connections()),
        ),
        (ConnectionConfig("shc", 0), "shc: num_streams must be an integer >= 2, got 0"),
        (
            ConnectionConfig("shc", 1),
            "shc: num_streams must be an integer >= 2, got 1 (one stream: use kind 'residual')",
        ),
        (ConnectionConfig("residual", 4), "residual: num_streams must be 1, got 4"),
        (ConnectionConfig("shc", 4, [1]), "connection options must be a mapping, got [1]"),
        (ConnectionConfig("kromhc", 3), "kromhc"),
        (ConnectionConfig("shc", 4, {"sinkhorn_iters": 3}), "unknown option"),
    ],
)
def test_bad_connection_is_refused(conn, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        conn.validate()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"n_heads": 6, "n_kv_heads": 4}, "multiple"), ({"dim": 0}, "model.dim"), ({"head_dim": 7}, "even")],
)
def test_bad_model_shape_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**overrides).validate()


def test_unknown_setting_and_preset_are_refused():
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose one of demo"):
        get_preset("huge")


def test_round_trip_and_presets_build():
    cfg = get_preset("demo").model
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert {"demo", "cpu-study", "tiny", "small", "qwen3-0.6b"} <= set(available_presets())
    for name in ("demo", "cpu-study", "tiny"):
        preset = get_preset(name)
        assert preset.training["seq_len"] <= preset.model.max_seq_len
        preset.model.vocab_size = 260
        LanguageModel(preset.model.validate())
    edited = get_preset("demo")
    edited.model.dim = 7
    assert get_preset("demo").model.dim == 128  # presets are copied out
