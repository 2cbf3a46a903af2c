"""``hyperconn data``: prepares a source and prints its counts; bad input is an error, not a traceback."""

import argparse
import json

import pytest

from hyperconn.data.commands import register


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


def test_data_prepare_command_writes_shards_training_reads(tmp_path, text_folder, capsys):
    out = tmp_path / "shards"
    argv = ["data", "prepare", "--source", str(text_folder), "--out", str(out), "--shard-chars", "2000"]
    assert _run([*argv, "--max-tokens", "3000", "--cache-dir", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "shard     0" in printed and "3,000 training tokens" in printed
    index = json.loads((out / "index.json").read_text())
    assert index["train_tokens"] == 3000 and index["source"].startswith("folder")
    from hyperconn.data import DataConfig, prepare_data

    data = prepare_data(DataConfig(source=f"shards:{out}", cache_dir=str(tmp_path / "c")))
    assert len(data.train) == 3000 and data.val_bytes == index["val_bytes"] > 0
    with pytest.raises(ValueError, match="workers=0"):
        _run([*argv, "--workers", "0"])


def test_data_verify_and_errors_through_the_cli(tmp_path, text_folder, capsys):
    from hyperconn.cli import main

    out = tmp_path / "shards"
    argv = ["data", "prepare", "--source", str(text_folder), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main([*argv, "--quiet", "--shard-chars", "1000"]) == 0
    assert main(["data", "verify", str(out)]) == 0
    assert "shards verified" in capsys.readouterr().out
    shards = json.loads((out / "index.json").read_text())["shards"]
    name = next(r["train"]["file"] for r in shards if r["train"]["tokens"])
    victim = out / name
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    assert main(["data", "verify", str(out)]) == 2
    assert f"{name}: SHA-256 differs" in capsys.readouterr().err
    assert main([*argv, "--workers", "0"]) == 2
    assert "workers=0" in capsys.readouterr().err
