"""``shc data``: prepares a source and prints its counts; bad input is an error, not a traceback."""

import argparse
import json

import pytest

from shc.data.commands import register


def _run(argv):
    parser = argparse.ArgumentParser(prog="shc")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_command_prints_counts(tmp_path, text_folder, capsys):
    assert _run(["data", "--source", str(text_folder), "--cache-dir", str(tmp_path / "c"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    n_bytes = sum(len(p.read_bytes()) for p in text_folder.rglob("*.txt"))
    assert info["train_bytes"] + info["val_bytes"] == n_bytes
    assert info["train_tokens"] == info["train_bytes"] + info["train_documents"]  # bytes + one eos each
    assert _run(["data", "--source", str(text_folder), "--cache-dir", str(tmp_path / "c")]) == 0
    assert "bytes/token" in capsys.readouterr().out


def test_data_command_bad_value(tmp_path):
    with pytest.raises(ValueError, match="val_fraction=2.0"):
        _run(["data", "--val-fraction", "2", "--cache-dir", str(tmp_path)])
