"""Bad input to ``hyperconn train``/``eval``/``generate`` is refused before anything is written:
exit code 2, one line ``hyperconn CMD: error: ...`` naming the value and what is allowed."""

from __future__ import annotations

import pytest
import yaml
from tests.support import MICRO

from hyperconn.train import TrainConfig, load_config


@pytest.fixture
def train_argv(corpus, cache_dir, tmp_path):
    sets = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO]
    return ["train", "--preset", "demo", "--out", tmp_path / "run", *[x for s in sets for x in ("--set", s)]]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--set", "train.device=tpu"], r"train.device must be auto, cpu, cuda, cuda:<index> or mps, got 'tpu'"),
        (["--set", "train=1"], r"train is a section of settings, not a value \(got 1\)"),
        (["--set", "model.connection=shc"], r"model.connection is a section of settings"),
        (["--set", "model.connection.options.sigma_bias=abc"], r"options.sigma_bias must be a number, got 'abc'"),
        (["--set", "model.connection.options.mix_streams=1"], r"options.mix_streams must be true or false, got 1"),
        (["--set", "train.out_dir=123"], r"train.out_dir must be a string, got 123"),
        (["--set", "data.source=on"], r"source='on'"),
        # YAML 1.1 would read these as booleans and silently turn the setting on
        (["--set", "train.compile=yes"], r"train.compile must be true or false, got 'yes'"),
        (["--set", "train.progress=off"], r"train.progress must be true or false, got 'off'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(cli, train_argv, tmp_path, cache_dir, extra, match):
    cli.refused([*train_argv, *extra], match, watch=[tmp_path, cache_dir])
    assert not (tmp_path / "run").exists()


def test_compile_without_a_cpp_compiler_is_refused_before_anything_is_written(cli, train_argv, tmp_path):
    """On the CPU, Inductor writes C++: no compiler is one line at setup, not a traceback at step 1."""
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-c++"))}):  # restored on exit
        line = cli.refused(
            [*train_argv, "--set", "train.compile=true"], r"train.compile=true on the CPU needs a C\+\+ compiler",
            watch=[tmp_path],
        )
    assert "no-such-c++" in line and "train.compile=false" in line
    assert not (tmp_path / "run").exists()


def test_a_yaml_syntax_error_in_the_config_file_names_the_file_and_line(cli, train_argv, tmp_path, cache_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1e-3\n")
    cli.refused([*train_argv, "--config", bad], r"config file .*bad.yaml is not valid YAML: .* at line 3", [tmp_path])


def test_set_values_follow_yaml_1_2(make_cfg):
    cfg = make_cfg("train.lr=1e-3", "train.compile=true", "train.threads=null")
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.compile is True and cfg.train.threads is None
    assert make_cfg('train.out_dir="123"', out=None).train.out_dir == "123"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["eval", "/nonexistent"], r"/nonexistent is not a run directory"),
        (["generate", "/nonexistent", "--prompt", "x"], r"/nonexistent is not a run directory"),
        (["generate", "/nonexistent", "--prompt", "x", "--device", "tpu"], r"--device must be .*, got 'tpu'"),
        (["eval", "/nonexistent", "--device", "tpu"], r"--device must be .*, got 'tpu'"),
    ],
)
def test_eval_and_generate_name_their_own_arguments(cli, argv, match):
    cli.refused(argv, match)


def test_generate_on_cuda_without_cuda_names_the_device_flag(cli, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli.refused(["generate", tmp_path, "--prompt", "x", "--device", "cuda"], r"--device='cuda' but CUDA")
    assert "train.device" not in line


def test_a_saved_config_without_skip_inert_loads_with_the_old_behaviour(make_cfg, tmp_path):
    """Runs saved before ``model.connection.skip_inert`` existed had every H_res: they load with
    skip_inert=False (a new run's default is True), so their checkpoints match the model built."""
    cfg = make_cfg()
    assert cfg.model.connection.skip_inert is True
    old = cfg.to_dict()
    del old["model"]["connection"]["skip_inert"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert load_config(tmp_path / "old.yaml").model.connection.skip_inert is False
    (tmp_path / "new.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "new.yaml") == cfg
    assert TrainConfig.from_dict(old).model.connection.skip_inert is True  # a partial NEW config: today's default


@pytest.mark.slow
def test_a_resume_with_another_tokenizer_is_refused_as_a_changed_setting(cli, train_argv, tmp_path, cache_dir):
    rc, _, err = cli.run([*train_argv, "--set", "train.steps=2", "--set", "train.checkpoint_interval=2"])
    assert rc == 0, err
    resume = [*train_argv, "--set", "train.steps=2", "--resume", "--set", "data.tokenizer=bpe"]
    cli.refused(
        resume,
        r"cannot resume .*: the config differs from its config.yaml in data.tokenizer; a resume may change only",
        watch=[tmp_path, cache_dir],
    )
