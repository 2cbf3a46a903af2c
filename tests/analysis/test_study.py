"""Study planning: run names encode every axis value, axis settings reach the configs, bad specs fail."""

from __future__ import annotations

import pytest
import yaml

from hyperconn.analysis.study import (
    IGNORED_KEYS,
    Axis,
    CompareConfig,
    config_differences,
    parse_axis,
    plan,
    train_config,
)


def study(**kw) -> CompareConfig:
    base = dict(preset="demo", kinds=("residual", "shc"), num_streams=(2, 4), seeds=2, out="runs/x", steps=30)
    return CompareConfig(**{**base, **kw}).validate()


def test_run_names_encode_every_axis_value():
    cfg = study(axes=(parse_axis("shc:model.connection.options.sigma_bias=1.0,2.0"),
                      parse_axis("train.lr_scale=0.5,1")))  # fmt: skip
    names = [spec.name for spec in cfg.runs()]
    assert len(names) == len(set(names)) == 2 * (2 + 2 * 2 * 2)
    assert names[:4] == ["residual-n1-lrx0.5-s0", "residual-n1-lrx1-s0",
                         "shc-n2-sb1.0-lrx0.5-s0", "shc-n2-sb1.0-lrx1-s0"]
    assert "shc-n4-sb2.0-lrx0.5-s1" in names
    by_seed = [{spec.group for spec in cfg.runs() if spec.seed == seed} for seed in (0, 1)]
    assert by_seed[0] == by_seed[1]


def test_axis_values_reach_the_resolved_configs():
    cfg = study(axes=(Axis("model.connection.options.sigma_bias", (2.0,), kinds=("shc",)),
                      Axis("train.lr_scale", (0.5,)), Axis("model.n_layers", (2,))))  # fmt: skip
    jobs = {job.spec.name: job for job in plan(cfg)}
    shc = jobs["shc-n4-sb2.0-lrx0.5-L2-s1"].config
    residual = jobs["residual-n1-lrx0.5-L2-s0"].config
    plain = train_config(study(), next(s for s in study().runs() if s.kind == "shc"))
    assert shc.model.connection.options == {"sigma_bias": 2.0} and residual.model.connection.options == {}
    assert shc.train.lr == pytest.approx(0.5 * plain.train.lr)
    assert shc.train.min_lr == pytest.approx(0.5 * plain.train.min_lr)
    assert shc.model.n_layers == residual.model.n_layers == 2 and shc.train.seed == 1 and shc.train.steps == 30
    assert shc.train.out_dir == "runs/x/shc-n4-sb2.0-lrx0.5-L2-s1"


def test_no_axes_keeps_the_old_names():
    cfg = study(kinds=("residual", "mhc", "shc"), num_streams=4, seeds=1)
    assert [s.name for s in cfg.runs()] == ["residual-n1-s0", "mhc-n4-s0", "shc-n4-s0"]


def test_study_spec_file_round_trip(tmp_path):
    spec = {"preset": "demo", "kinds": "residual,shc", "num_streams": [2, 4], "seeds": 3, "steps": 10,
            "set": ["train.batch_size=4"], "bench_rounds": 0,
            "axes": [{"key": "model.connection.options.sigma_bias", "values": [1.0, 4.0], "kinds": ["shc"]}]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    cfg = CompareConfig.from_file(path).validate()
    assert cfg.kinds == ("residual", "shc") and cfg.num_streams == (2, 4) and cfg.overrides == ("train.batch_size=4",)
    assert cfg.axes == (Axis("model.connection.options.sigma_bias", (1.0, 4.0), kinds=("shc",)),)
    assert CompareConfig.from_dict(cfg.to_dict()).validate() == cfg


def test_config_differences_counts_results_not_logging():
    cfg = study(kinds=("shc",), num_streams=4, seeds=1)
    spec = cfg.runs()[0]
    wanted = train_config(cfg, spec)
    saved = train_config(cfg, spec)
    saved.model.vocab_size = 257  # filled in by the trainer; the wanted config leaves it open
    for key in IGNORED_KEYS:
        section, name = key.split(".")
        setattr(getattr(saved, section), name, {"device": "cuda", "threads": 7}.get(name, "x"))
    assert config_differences(saved, wanted) == []
    saved.model.connection.options = {"sigma_bias": 3.0}
    saved.train.eval_batches = 2
    assert config_differences(saved, wanted) == [
        "model.connection.options.sigma_bias: the run has 3.0, this invocation asks 4.0",
        f"train.eval_batches: the run has 2, this invocation asks {wanted.train.eval_batches}",
    ]
    # an option left unset means its default: a run trained without sigma_bias IS sigma_bias 4.0
    saved.train.eval_batches = wanted.train.eval_batches
    saved.model.connection.options = {}
    wanted.model.connection.options = {"sigma_bias": 4.0}
    assert config_differences(saved, wanted) == []
    wanted.model.connection.options = {"sigma_bias": 2.0}
    assert config_differences(saved, wanted) == [
        "model.connection.options.sigma_bias: the run has 4.0, this invocation asks 2.0"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"axes": (Axis("train.seed", (1, 2)),)}, "set by compare itself"),
        ({"axes": (Axis("train.lr", (1.0, 1.0)),)}, "repeat"),
        ({"axes": (Axis("train.lr", (1.0,), kinds=("mhc",)),)}, "not in this study"),
        ({"axes": (Axis("train.lr", (1.0,), name="s"),)}, "not 'n' or 's'"),
        ({"axes": (Axis("lr", (1.0,)),)}, "dotted config path"),
        ({"axes": (Axis("train.lr", ()),)}, "at least one value"),
        ({"axes": (Axis("train.lr", (1.0,)), Axis("train.lr", (2.0,), name="lr_b"))}, "distinct keys"),
        ({"num_streams": (2, 2)}, "num_streams must not repeat"),
        ({"num_streams": ()}, "num_streams: give at least one"),
        ({"kinds": ("nope",)}, "unknown connection kind"),
        ({"kinds": ()}, "give at least one connection kind"),
        ({"seeds": 0}, "seeds"),
        ({"bench_rounds": -1}, "bench_rounds"),
    ],
)
def test_bad_study(kwargs, message):
    with pytest.raises(ValueError, match=message):
        study(**kwargs)


def test_a_bad_num_streams_is_refused_by_the_connection_before_anything_trains():
    with pytest.raises(ValueError, match=r"shc: num_streams must be an integer >= 2, got 0"):
        plan(study(num_streams=(0,)))


def test_bad_spec_and_axis_text(tmp_path):
    with pytest.raises(ValueError, match="unknown study key"):
        CompareConfig.from_dict({"preset": "demo", "kinds": ["shc"], "sedes": 3})
    with pytest.raises(ValueError, match="needs 'preset' and 'kinds'"):
        CompareConfig.from_dict({"kinds": ["shc"]})
    with pytest.raises(ValueError, match="each axis must be a mapping"):
        CompareConfig.from_dict({"preset": "demo", "kinds": ["shc"], "axes": [{"key": "train.lr"}]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CompareConfig.from_file(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="must look like"):
        parse_axis("train.lr")
    with pytest.raises(ValueError, match="train.lr_scale values must be numbers > 0"):
        plan(study(axes=(Axis("train.lr_scale", (-1.0,)),)))


def test_command_line_and_spec_file_merge(tmp_path):
    import argparse

    from hyperconn.analysis.commands import register, study_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"preset": "demo", "kinds": ["shc"], "seeds": 2, "set": ["train.lr=1e-3"]}))
    args = parser.parse_args(["compare", "--study", str(spec), "--seeds", "3", "--num-streams", "2,4", "--out", "o",
                              "--set", "train.batch_size=4", "--axis", "train.lr_scale=0.5,2"])
    cfg = study_from_args(args)
    assert (cfg.seeds, cfg.num_streams, str(cfg.out)) == (3, (2, 4), "o")
    assert cfg.overrides == ("train.lr=1e-3", "train.batch_size=4")
    assert [s.name for s in cfg.runs()][:2] == ["shc-n2-lrx0.5-s0", "shc-n2-lrx2-s0"]
    with pytest.raises(ValueError, match="needs --preset"):
        study_from_args(parser.parse_args(["compare", "--out", "o"]))
    with pytest.raises(ValueError, match="--num-streams must be integers"):
        study_from_args(parser.parse_args(["compare", "--preset", "demo", "--num-streams", "four"]))
    with pytest.raises(FileNotFoundError, match="no study.json"):
        study_from_args(parser.parse_args(["compare", "--report-only", "--out", str(tmp_path)]))


def test_a_saved_run_without_skip_inert_counts_as_skip_inert_false(tmp_path):
    """A run saved before ``model.connection.skip_inert`` existed was built with every H_res: it
    differs from a new (skip_inert=True) invocation and matches one that asks skip_inert=False."""
    from hyperconn.train import load_config

    cfg = study(kinds=("shc",), num_streams=4, seeds=1)
    wanted = train_config(cfg, cfg.runs()[0])
    old = wanted.to_dict()
    del old["model"]["connection"]["skip_inert"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    saved = load_config(tmp_path / "config.yaml")
    assert config_differences(saved, wanted) == [
        "model.connection.skip_inert: the run has False, this invocation asks True"
    ]
    wanted.model.connection.skip_inert = False
    assert config_differences(saved, wanted) == []
