"""One word per concept: ``kind`` and ``num_streams`` in flags, configs and the API; the old words
(``--connection``, ``--methods``, ``--streams``, ``model.connection.streams``, a study's ``methods``)
still work with one warning line each; what is written uses the new words; configs are validated once."""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import yaml

import hyperconn.model.config as model_config
from hyperconn.cli import main
from hyperconn.model import ConnectionConfig, LanguageModel
from hyperconn.train import TrainConfig, build_config, load_config
from hyperconn.vocabulary import RenamedWarning


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line]


@pytest.mark.slow
def test_old_train_flags_work_and_warn_once_each_and_the_run_is_written_in_new_words(tmp_path, micro_args, capsys):
    out = tmp_path / "run"
    argv = ["train", "--connection", "shc", "--streams", "2", "--steps", "3", "--out", str(out), *micro_args]
    assert main(argv) == 0
    assert warning_lines(capsys.readouterr().err) == [
        "hyperconn train: warning: --connection is deprecated; use --kind",
        "hyperconn train: warning: --streams is deprecated; use --num-streams",
    ]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["connection"]["kind"] == "shc" and saved["model"]["connection"]["num_streams"] == 2
    assert "streams" not in saved["model"]["connection"]

    # a run directory written before the rename: its config.yaml has model.connection.streams
    saved["model"]["connection"]["streams"] = saved["model"]["connection"].pop("num_streams")
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["eval", str(out), "--batches", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["step"] == 3
    [line] = warning_lines(captured.err)
    assert line.startswith("hyperconn eval: warning: model.connection.streams (in ")
    assert line.endswith("config.yaml) is deprecated; use model.connection.num_streams")
    assert main(["train", "--out", str(out), "--steps", "6", "--resume"]) == 0  # resumes the old run
    assert len(warning_lines(capsys.readouterr().err)) == 1
    resaved = yaml.safe_load((out / "config.yaml").read_text())["model"]["connection"]
    assert resaved["num_streams"] == 2 and "streams" not in resaved  # rewritten in the new words
    assert json.loads((out / "DONE").read_text())["step"] == 6


@pytest.mark.slow
def test_new_train_flags_warn_nothing_and_name_the_run_with_n(tmp_path, micro_args, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--kind", "mhc", "--num-streams", "2", "--steps", "3", "--seed", "1", *micro_args]
    assert main(argv) == 0
    assert warning_lines(capsys.readouterr().err) == []
    assert (tmp_path / "runs" / "demo-mhc-n2-s1" / "DONE").is_file()  # run names keep the paper's n


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--streams", "0"], "hyperconn train: error: shc: num_streams must be an integer >= 2, got 0"),
        (["--set", "model.connection.streams=0"], "hyperconn train: error: shc: num_streams must be an integer >= 2"),
    ],
)
def test_a_bad_value_under_an_old_name_exits_2_with_one_error_line(tmp_path, micro_args, capsys, flags, message):
    out = tmp_path / "bad"
    assert main(["train", "--out", str(out), *flags, *micro_args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(warning_lines("\n".join(err))) == 1
    [error] = [line for line in err if ": error: " in line]
    assert error.startswith(message)
    assert not out.exists()


def test_old_config_key_in_a_file_and_in_set_is_read_and_a_later_new_key_wins(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"model": {"connection": {"kind": "hc", "streams": 2}}}))
    with pytest.warns(RenamedWarning, match=r"model.connection.streams \(in config file .*c.yaml\) is deprecated"):
        cfg = build_config("demo", f)
    assert cfg.model.connection.num_streams == 2
    assert "streams" not in cfg.to_dict()["model"]["connection"]
    with pytest.warns(RenamedWarning):
        assert build_config("demo", f, ["model.connection.num_streams=8"]).model.connection.num_streams == 8
    with pytest.warns(RenamedWarning, match="model.connection.streams is deprecated; use model.connection.num_streams"):
        assert build_config("demo", overrides=["model.connection.streams=8"]).model.connection.num_streams == 8
    both = {"model": {"connection": {"streams": 2, "num_streams": 4}}}
    with pytest.raises(ValueError, match="give model.connection.num_streams alone"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TrainConfig.from_dict(both)


def test_an_old_saved_config_loads_to_the_same_config(tmp_path):
    cfg = build_config("demo", kind="mhc", num_streams=2)
    old = cfg.to_dict()
    old["model"]["connection"]["streams"] = old["model"]["connection"].pop("num_streams")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.warns(RenamedWarning, match="config.yaml"):
        assert load_config(tmp_path / "config.yaml") == cfg


def test_old_python_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="num_streams="):
        conn = ConnectionConfig(kind="hc", streams=2)
    assert conn.num_streams == 2
    with pytest.warns(DeprecationWarning, match="use num_streams"):
        assert conn.streams == 2
    with pytest.warns(DeprecationWarning, match="num_streams="):
        assert build_config("demo", connection="hc", streams=2).model.connection == conn.validate()


def test_compare_and_bench_and_init_tour_take_old_and_new_flags(capsys):
    from hyperconn.analysis.commands import register as register_analysis
    from hyperconn.analysis.commands import study_from_args
    from hyperconn.bench.commands import register as register_bench
    from hyperconn.demo import register as register_demo

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for register in (register_analysis, register_bench, register_demo):
        register(sub)
    new = study_from_args(parser.parse_args(["compare", "--preset", "demo", "--kinds", "shc", "--num-streams", "2,4"]))
    with pytest.warns(RenamedWarning) as caught:
        args = parser.parse_args(["compare", "--preset", "demo", "--methods", "shc", "--streams", "2,4"])
    assert sorted(str(w.message) for w in caught) == [
        "--methods is deprecated; use --kinds", "--streams is deprecated; use --num-streams"]  # fmt: skip
    old = study_from_args(args)
    assert (old.kinds, old.num_streams) == (new.kinds, new.num_streams) == (("shc",), (2, 4))
    for argv, value in ((["bench", "layer", "--streams", "2,8"], (2, 8)), (["bench", "call", "--streams", "2"], 2),
                        (["init-tour", "--streams", "3"], 3)):  # fmt: skip
        with pytest.warns(RenamedWarning, match="--streams is deprecated; use --num-streams"):
            assert parser.parse_args(argv).num_streams == value
    assert parser.parse_args(["bench", "step", "--num-streams", "2"]).num_streams == 2
    assert main(["init-tour", "--streams", "2"]) == 0
    assert warning_lines(capsys.readouterr().err) == [
        "hyperconn init-tour: warning: --streams is deprecated; use --num-streams"
    ]


def test_a_study_json_in_old_words_reloads_and_is_written_in_new_words(tmp_path):
    from hyperconn.analysis.compare import load_study
    from hyperconn.analysis.study import CompareConfig

    old = {"preset": "demo", "methods": ["residual", "shc"], "streams": [2], "seeds": 1, "out": str(tmp_path),
           "steps": 3, "set": [], "batches": 1, "bench_rounds": 0,
           "axes": [{"key": "train.lr", "values": [0.001], "name": "", "methods": ["shc"]}]}  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(old))
    with pytest.warns(RenamedWarning) as caught:
        cfg = load_study(tmp_path)
    assert len(caught) == 3  # methods, streams, the axis's methods
    assert (cfg.kinds, cfg.num_streams, cfg.axes[0].kinds) == (("residual", "shc"), (2,), ("shc",))
    assert [s.name for s in cfg.runs()] == ["residual-n1-s0", "shc-n2-lr0.001-s0"]
    written = cfg.to_dict()
    assert written["kinds"] == ["residual", "shc"] and written["num_streams"] == [2]
    assert written["axes"][0]["kinds"] == ["shc"] and "methods" not in written["axes"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what this code writes reads back without a warning
        assert CompareConfig.from_dict(written).validate() == cfg


def count_connection_checks(monkeypatch) -> list:
    calls = []
    real = model_config.connection_parameter_count
    monkeypatch.setattr(model_config, "connection_parameter_count", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_the_config_is_validated_once_on_the_way_to_the_model(monkeypatch):
    calls = count_connection_checks(monkeypatch)
    cfg = build_config("demo", kind="shc", num_streams=2, overrides=["model.dim=16", "model.n_layers=1",
                       "model.head_dim=8", "model.mlp_dim=32", "model.n_heads=2", "model.n_kv_heads=1"])  # fmt: skip
    assert len(calls) == 1
    cfg.validate()  # what the trainer does
    cfg.model.vocab_size = 50  # the trainer fills it in from the tokenizer
    model = LanguageModel(cfg.model)  # the model validates its config too
    assert len(calls) == 1 and model.num_streams == 2
    cfg.model.connection.num_streams = 0  # a change after validation is checked again
    with pytest.raises(ValueError, match="shc: num_streams must be an integer >= 2, got 0"):
        cfg.validate()
    assert len(calls) == 2
    cfg.model.vocab_size = 0
    with pytest.raises(ValueError, match="model.vocab_size must be an integer >= 1"):
        cfg.model.validate()
