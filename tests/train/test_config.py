"""Config resolution: precedence, parsing, validation at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hyperconn.model import get_preset
from hyperconn.train import TrainConfig, build_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_preset_file_flags_overrides_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"preset": "tiny", "train": {"lr": 1e-2, "steps": 7, "warmup_steps": 5, "seed": 3}}))
    cfg = build_config(None, f, ["train.seed=9", "model.connection.options.sigma_bias=2"], steps=11)
    assert cfg.preset == "tiny"
    assert cfg.model.dim == get_preset("tiny").model.dim  # from the preset
    assert cfg.train.batch_size == get_preset("tiny").training["batch_size"]
    assert cfg.train.lr == 1e-2  # from the file
    assert cfg.train.steps == 11  # the flag beats the file
    assert cfg.train.seed == 9  # the override beats everything
    assert cfg.model.connection.options == {"sigma_bias": 2}
    assert build_config("demo", f).preset == "demo"  # --preset beats the file's preset


def test_yaml_style_floats_and_kind_defaults():
    cfg = build_config("demo", overrides=["train.lr=1e-3", "train.min_lr=0"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.min_lr, float)
    assert build_config("demo", kind="residual").model.connection.num_streams == 1
    assert build_config("demo", kind="mhc").model.connection.num_streams == 4
    assert build_config("demo", kind="hc", num_streams=2).model.connection.num_streams == 2


def test_an_old_config_without_new_keys_loads_with_defaults():
    cfg = build_config("demo")
    old = cfg.to_dict()
    del old["train"]["eps"]  # a key added after the run was written
    assert TrainConfig.from_dict(old).train.eps == 1e-8


def test_round_trip_through_yaml():
    cfg = build_config("tiny", kind="mhc", overrides=["model.connection.options.sinkhorn_iters=5"])
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preset": "huge"}, ValueError, "unknown preset 'huge'"),
        ({"kind": "foo"}, ValueError, "unknown connection kind 'foo'; choose one of residual"),
        ({"num_streams": 0}, ValueError, r"shc: num_streams must be an integer >= 2, got 0"),
        ({"kind": "residual", "num_streams": 4}, ValueError, "residual: num_streams must be 1, got 4"),
        ({"overrides": ["train.seq_len=999"]}, ValueError, "longer than the model supports"),
        ({"overrides": ["data.source=/no/such/file.txt"]}, FileNotFoundError, "no such file"),
        ({"overrides": ["train.precision=fp16"]}, ValueError, "precision must be one of"),
        ({"overrides": ["train.lrr=1"]}, ValueError, "unknown setting.*train.lrr"),
        ({"overrides": ["train.lr"]}, ValueError, "section.key=value"),
        ({"overrides": ["train.lr=fast"]}, ValueError, "train.lr must be a number"),
        ({"config_file": "/no/such.yaml"}, FileNotFoundError, "config file"),
        ({"overrides": ["train.lr=nan"]}, ValueError, r"train.lr must be a finite number, got nan"),
        ({"overrides": ["train.lr=.inf"]}, ValueError, r"train.lr must be a finite number, got inf"),
        ({"overrides": ["train.min_lr=-1e-4"]}, ValueError, r"train.min_lr must be a finite number >= 0"),
        ({"overrides": ["train.grad_clip=0"]}, ValueError, r"train.grad_clip must be a finite number > 0, got 0"),
        ({"overrides": ["train.grad_clip=-1"]}, ValueError, r"train.grad_clip must be a finite number > 0"),
        ({"overrides": ["train.grad_clip=.nan"]}, ValueError, r"train.grad_clip must be a finite number, got nan"),
        ({"overrides": ["train.eps=0"]}, ValueError, r"train.eps must be a finite number > 0, got 0"),
        ({"overrides": ["train.beta2=1.0"]}, ValueError, r"train.beta2 must be in \[0, 1\)"),
        ({"overrides": ["model.norm_eps=0"]}, ValueError, r"model.norm_eps must be a finite number > 0, got 0"),
        ({"overrides": ["model.norm_eps=-1e-6"]}, ValueError, r"model.norm_eps must be a finite number > 0"),
        ({"overrides": ["model.connection.options.sigma_bias=.inf"]}, ValueError, r"sigma_bias must be .*, got inf"),
        (
            {"overrides": ["train.steps=10", "train.warmup_steps=11"]},
            ValueError,
            r"train.warmup_steps \(11\) must not exceed train.steps \(10\)",
        ),
    ],
)
def test_bad_values_are_refused(kwargs, error, match):
    kwargs.setdefault("preset", "demo")
    with pytest.raises(error, match=match):
        build_config(**kwargs)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    data = yaml.safe_load(path.read_text()).get("data") or {}
    # shards and a local tokenizer are supplied by the user before training; validate the rest
    overrides = []
    if str(data.get("source", "")).startswith("shards:"):
        overrides.append("data.source=shakespeare")
    if str(data.get("tokenizer", "")).startswith("local:"):
        overrides.append("data.tokenizer=byte")
    cfg = build_config(None, path, overrides)
    assert cfg.train.seq_len <= cfg.model.max_seq_len


def test_a_smoke_run_below_the_presets_warmup_scales_the_warmup_down(capsys):
    """``--steps 5`` on demo (warm-up 20 of 300 steps) just runs, with the warm-up scaled to the
    preset's fraction (at least 1) and a line saying so; an explicit warm-up is still refused."""
    demo = get_preset("demo").training
    assert demo["warmup_steps"] > 5  # the case this covers
    cfg = build_config("demo", steps=5)
    assert cfg.train.steps == 5
    assert cfg.train.warmup_steps == max(1, round(demo["warmup_steps"] * 5 / demo["steps"]))
    err = capsys.readouterr().err
    assert f"train.warmup_steps scaled to {cfg.train.warmup_steps}" in err and "train.steps=5" in err
    assert build_config("demo", steps=200).train.warmup_steps == demo["warmup_steps"]  # above it: unchanged
    assert "scaled" not in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"train.warmup_steps \(20\) must not exceed train.steps \(5\)"):
        build_config("demo", overrides=["train.warmup_steps=20"], steps=5)
