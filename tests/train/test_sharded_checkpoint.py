"""Sharded checkpoints (train.checkpoint_format=sharded) in one process: the state round-trips bit for
bit, a corrupt newest is skipped with its reason, DCP metadata naming a foreign class is refused
without running it, a kill -9 during a sharded save leaves a run whose --resume ends with an
uninterrupted run's weights, and `hyperconn export` of a sharded run equals the full-format
checkpoint of the same run. Across processes and layouts: test_scale_out.py."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.support import MICRO, TINY

from hyperconn.cli import main
from hyperconn.fileio import is_temp_name
from hyperconn.train import TrainConfig, train
from hyperconn.train.build import build_plain
from hyperconn.train.checkpoint import WEIGHTS, checkpoint_dir, list_checkpoints
from hyperconn.train.loss import lm_loss
from hyperconn.train.optim import build_optimizer
from hyperconn.train.sharded_checkpoint import (
    SHARDED,
    consolidate,
    is_sharded,
    load_sharded,
    read_sharded,
    save_sharded,
)


def _cfg(seed: int) -> TrainConfig:
    model = {**TINY, "tie_embeddings": True, "connection": {"kind": "shc"}}
    return TrainConfig.from_dict({"preset": "demo", "model": model, "train": {"seed": seed, "seq_len": 8}}).validate()


def _step(model, optimizer, seed: int) -> None:
    tokens = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(seed))
    lm_loss(model, tokens[:, :-1], tokens[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _trained():
    model = build_plain(_cfg(3), 3)
    optimizer = build_optimizer(model, 1e-2, (0.9, 0.95), 0.1)
    for i in range(2):
        _step(model, optimizer, 100 + i)
    return model, optimizer


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_the_state_round_trips_bit_for_bit(tmp_path):
    model, optimizer = _trained()
    path = save_sharded(tmp_path, 2, model, optimizer, {"precision": "fp32"})
    assert is_sharded(path) and (path / SHARDED / ".metadata").is_file()
    assert not any(is_temp_name(p.name) for p in checkpoint_dir(tmp_path).iterdir())  # published, no leftovers
    state = read_sharded(path, _shapes(model))
    assert state["step"] == 2 and state["checkpoint_format"] == "sharded"
    other = build_plain(_cfg(9), 9)
    other_opt = build_optimizer(other, 1e-2, (0.9, 0.95), 0.1)
    assert not _same(model, other)
    load_sharded(path, other, other_opt)
    assert _same(model, other) and other.head.weight is other.embed.weight
    weights = consolidate(path)  # one process, no model: what export and eval read
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    _step(model, optimizer, 7)
    _step(other, other_opt, 7)  # reads AdamW's moments and step count
    assert _same(model, other)


def test_a_checkpoint_that_does_not_fit_or_reads_badly_is_refused_naming_why(tmp_path):
    model, optimizer = _trained()
    path = save_sharded(tmp_path, 2, model, optimizer, {"precision": "fp32"})
    shapes = _shapes(model)
    with pytest.raises(ValueError, match=r"does not match the model config: missing extra\.weight"):
        read_sharded(path, {**shapes, "extra.weight": (3,)})
    with pytest.raises(ValueError, match=r"shape of embed\.weight is \(32, 16\), the model has \(64, 16\)"):
        read_sharded(path, {**shapes, "embed.weight": (64, 16)})
    (path / SHARDED / ".metadata").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match=r"is corrupt: cannot read sharded/\.metadata"):
        read_sharded(path, shapes)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_metadata_naming_a_foreign_class_is_refused_without_running_it(tmp_path):
    model, optimizer = _trained()
    path = save_sharded(tmp_path, 2, model, optimizer, {"precision": "fp32"})
    (path / SHARDED / ".metadata").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match=r"names (posix|os)\.system, which a checkpoint never holds"):
        read_sharded(path)


@pytest.mark.slow
def test_a_corrupt_shard_of_the_newest_is_skipped_on_resume(make_cfg, capsys):
    cfg = make_cfg("train.checkpoint_format=sharded", "train.keep_checkpoints=3")
    run = train(cfg)
    newest = list_checkpoints(run)[-1]
    shard = next((newest / SHARDED).glob("__0_0.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated: the metadata still reads
    (run / "DONE").unlink()
    train(make_cfg("train.checkpoint_format=sharded", "train.keep_checkpoints=3"), resume=True)
    err = capsys.readouterr().err
    assert f"resume: skipped checkpoint {newest.name}: checkpoint {newest} is corrupt: reading its shards failed" in err
    assert "resume: from checkpoint" in err and "step_00000004 (step 4, sharded format)" in err
    assert (run / "DONE").is_file()


def _launch(run, sets, resume: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "hyperconn.cli", "train", "--preset", "demo", "--out", str(run)]
    argv += [x for s in sets for x in ("--set", s)]
    return subprocess.Popen([*argv, "--resume"] if resume else argv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


@pytest.mark.slow
def test_a_kill_during_a_sharded_save_then_resume_gives_the_uninterrupted_weights(
    corpus, cache_dir, make_cfg, tmp_path
):
    run_settings = [
        "train.steps=30",
        "train.checkpoint_interval=1",
        "train.eval_interval=30",
        "train.checkpoint_format=sharded",
    ]
    sets = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO, *run_settings]
    reference = train(make_cfg(*run_settings, name="reference"))
    run = tmp_path / "killed"
    landed = False
    for _ in range(4):  # the save must be caught mid-write: a temporary folder beside the checkpoints
        proc = _launch(run, sets, resume=run.exists())
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not landed:
            root = checkpoint_dir(run)
            if root.is_dir() and any(is_temp_name(p.name) for p in root.iterdir()):
                proc.send_signal(signal.SIGKILL)
                landed = True
        proc.wait()
        if landed:
            break
    assert landed, "no kill landed during a sharded save"
    assert any(is_temp_name(p.name) for p in checkpoint_dir(run).iterdir())  # what the kill left
    proc = _launch(run, sets, resume=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"a temporary folder left by an interrupted write" in err
    assert not any(is_temp_name(p.name) for p in checkpoint_dir(run).iterdir())
    ours, theirs = consolidate(list_checkpoints(run)[-1]), consolidate(list_checkpoints(reference)[-1])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.slow
def test_export_of_a_sharded_run_equals_the_full_checkpoint_of_the_same_run(make_cfg, tmp_path, capsys):
    sharded = train(make_cfg("train.checkpoint_format=sharded", name="sharded"))
    full = train(make_cfg("train.checkpoint_format=full", name="full"))
    assert is_sharded(list_checkpoints(sharded)[-1]) and not is_sharded(list_checkpoints(full)[-1])
    for run in (sharded, full):
        assert main(["export", str(run), "--out", str(tmp_path / f"{run.name}-export")]) == 0
    a = load_file(str(tmp_path / "sharded-export" / WEIGHTS))
    b = load_file(str(list_checkpoints(full)[-1] / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    assert (tmp_path / "sharded-export" / "config.yaml").is_file()
    assert main(["eval", str(sharded), "--batches", "1", "--device", "cpu"]) == 0  # eval reads a sharded run
    capsys.readouterr()
    assert main(["export", str(sharded), "--out", str(tmp_path / "sharded-export")]) == 2  # not over a folder
    assert "already exists and is not empty" in capsys.readouterr().err
