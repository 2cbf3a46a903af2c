"""``hyperconn train``, ``hyperconn eval``, ``hyperconn generate`` end to end on a microscopic model."""

from __future__ import annotations

import json

import pytest

from hyperconn.cli import main


@pytest.mark.slow
def test_train_eval_generate(tmp_path, micro_args, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--preset",
        "demo",
        "--kind",
        "shc",
        "--num-streams",
        "2",
        "--steps",
        "3",
        "--seed",
        "1",
        "--out",
        str(out),
        *micro_args,
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "val_loss" in printed and str(out) in printed
    assert (out / "DONE").is_file()

    assert main(argv) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--steps", "6", "--resume"]) == 0  # config read back from the run
    assert json.loads((out / "DONE").read_text())["step"] == 6

    assert main(["eval", str(out), "--batches", "2", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 6 and result["val_loss"] > 0 and result["val_bpb"] > 0

    assert (
        main(
            [
                "generate",
                str(out),
                "--prompt",
                "to be",
                "--max-new-tokens",
                "12",
                "--temperature",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("to be")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind", "nope"], "unknown connection kind 'nope'"),
        (["--num-streams", "0"], "shc: num_streams must be an integer >= 2, got 0"),
        (["--preset", "huge"], "unknown preset"),
        (["--kind", "residual", "--num-streams", "3"], "residual: num_streams must be 1, got 3"),
        (["--set", "model.connection.num_streams=x"], "shc: num_streams must be an integer >= 2, got 'x'"),
    ],
)
def test_bad_flags_fail_with_exit_code_2_and_write_nothing(tmp_path, micro_args, capsys, flags, message):
    out = tmp_path / "bad"
    assert main(["train", "--out", str(out), *flags, *micro_args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_eval_of_a_missing_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_subsystem_table_lists_exactly_what_each_module_registers():
    import argparse
    import importlib

    from hyperconn.cli import SUBSYSTEMS

    for module, names in SUBSYSTEMS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == tuple(names), module
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert helps == {k: v for k, v in names.items() if k in helps}, module  # --help shows the same text


@pytest.mark.slow
def test_version_and_help_import_no_subsystem_and_no_torch():
    """``--version`` and ``--help`` answer from the table in cli.py, and ``import hyperconn`` loads
    its public names lazily: in a fresh interpreter neither torch nor any subsystem is imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from hyperconn.cli import main\n"
        "try:\n    main([sys.argv[1]])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'hyperconn.')))\n"
        "assert loaded == ['hyperconn.cli'], loaded"
    )
    for flag in ("--version", "--help"):
        done = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "hyperconn" in done.stdout


def test_the_package_loads_its_public_names_on_first_use():
    import hyperconn
    from hyperconn import connections

    assert hyperconn.make_connection is connections.make_connection
    assert set(hyperconn.__all__) <= set(dir(hyperconn))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = hyperconn.nope


def test_init_tour_prints_numbers_and_the_old_name_still_works(capsys):
    assert main(["init-tour", "--num-streams", "2"]) == 0
    out = capsys.readouterr().out
    assert "grad_fn" not in out and "tensor(" not in out
    assert "== residual (n=1)" in out and "== shc (n=2)" in out
    assert "||H_res - I||_F = 0.0000" in out  # hc starts at the identity
    assert main(["demo", "--num-streams", "2"]) == 0
    captured = capsys.readouterr()
    assert "now `hyperconn init-tour`" in captured.err and captured.out == out


def test_a_subsystem_without_its_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    """A command module whose optional dependency is missing still shows its commands, and running
    one exits 2 with the install hint; the other commands keep working."""
    (tmp_path / "needs_extra.py").write_text("import yaml  # pretend PyYAML is absent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "yaml", None)
    import hyperconn.cli as cli

    subsystems = (("hyperconn.demo", {"init-tour": "tour"}), ("needs_extra", {"train": "t", "eval": "e"}))
    monkeypatch.setattr(cli, "SUBSYSTEMS", subsystems)
    assert main(["train", "--preset", "demo", "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'hyperconn[train]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["init-tour", "--num-streams", "2"]) == 0


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hyperconn ")
