"""The run directory: --overwrite only after the new run has started; what a resume may change."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import hyperconn.train.step as step_mod
import hyperconn.train.trainer as trainer_mod
from hyperconn.train import read_metrics, train
from hyperconn.train.checkpoint import STATE, list_checkpoints
from hyperconn.train.optim import lr_at
from hyperconn.train.rundir import RESUMABLE_CHANGES


def snapshot(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def train_losses(run):
    return [(r["step"], r["loss"]) for r in read_metrics(run) if r["loss"] is not None]


@pytest.fixture
def old_run(make_cfg):
    run = train(make_cfg("train.steps=4"))
    return run, snapshot(run)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("data.source=SMALL", ValueError, r"training split has \d+ tokens, fewer than one batch .* = 65"),
        ("data.tokenizer=/no/such/tokenizer", (ValueError, FileNotFoundError), "/no/such/tokenizer"),
        ("model.vocab_size=10", ValueError, r"model.vocab_size=10 is smaller than the tokenizer's vocabulary \(257"),
        ("train.grad_clip=0", ValueError, "train.grad_clip must be a finite number > 0"),
    ],
)
@pytest.mark.slow
def test_a_failing_overwrite_leaves_the_old_run_byte_identical(make_cfg, old_run, tmp_path, bad, error, match):
    run, before = old_run
    if "SMALL" in bad:
        small = tmp_path / "small.txt"
        small.write_text("too short for a batch of 4 x 16 tokens\n")
        bad = f"data.source={small}"
    with pytest.raises(error, match=match):
        train(make_cfg("train.steps=6", bad), overwrite=True)
    assert snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_an_overwrite_that_fails_at_its_first_step_leaves_the_old_run(make_cfg, old_run, monkeypatch):
    run, before = old_run
    original = step_mod.lm_loss
    monkeypatch.setattr(step_mod, "lm_loss", lambda m, x, y: original(m, x, y) * float("nan"))
    with pytest.raises(trainer_mod.NonFiniteLossError, match="at step 0"):
        train(make_cfg("train.steps=6"), overwrite=True)
    assert snapshot(run) == before


@pytest.mark.slow
def test_an_overwrite_replaces_the_old_run_once_started(make_cfg, old_run):
    run, _ = old_run
    ours = run.parent / f".{run.name}.tmp-12345-deadbeef"  # left by a kill during an earlier overwrite
    ours.mkdir()
    theirs = run.parent / ".other-run.tmp-12345-deadbeef"  # another run's: not ours to delete
    theirs.mkdir()
    with pytest.raises(FileExistsError, match="--resume .* --overwrite"):
        train(make_cfg("train.steps=2"))
    train(make_cfg("train.steps=3", "train.checkpoint_interval=1"), overwrite=True)
    assert json.loads((run / "DONE").read_text())["step"] == 3
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002", "step_00000003"]  # nothing old left
    assert [s for s, _ in train_losses(run)] == [1, 2, 3]
    assert not ours.exists() and theirs.exists()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(make_cfg(name="never-started"), resume=True)


@pytest.mark.slow
def test_changing_steps_on_resume_changes_the_schedule_as_documented(make_cfg, capsys):
    run = train(make_cfg("train.steps=4"))
    capsys.readouterr()
    train(make_cfg("train.steps=8"), resume=True)
    assert "train.steps changed: " + RESUMABLE_CHANGES["steps"] in capsys.readouterr().err
    rows = {r["step"]: r["lr"] for r in read_metrics(run) if r["lr"] is not None}
    t = make_cfg("train.steps=8").train
    # step k's row holds the lr applied at index k-1: before the checkpoint the old schedule, after it the new
    assert rows[4] == pytest.approx(lr_at(3, t.lr, t.min_lr, t.warmup_steps, 4))
    assert rows[5] == pytest.approx(lr_at(4, t.lr, t.min_lr, t.warmup_steps, 8))
    assert rows[5] != pytest.approx(lr_at(4, t.lr, t.min_lr, t.warmup_steps, 4))
    with pytest.raises(ValueError, match=r"train.steps=6 is below its checkpoint's step 8"):
        train(make_cfg("train.steps=6"), resume=True)


@pytest.mark.slow
def test_changing_eval_batches_on_resume_leaves_training_unchanged(make_cfg):
    full = train(make_cfg(name="full"))
    cut = train(make_cfg(name="cut"))
    shutil.rmtree(list_checkpoints(cut)[-1])  # back to the step-4 checkpoint
    (cut / "DONE").unlink()
    train(make_cfg("train.eval_batches=1", name="cut"), resume=True)
    assert train_losses(cut) == train_losses(full)


def test_a_resume_that_changes_other_settings_is_refused(make_cfg):
    run = train(make_cfg("train.steps=4"))
    before = snapshot(run)
    with pytest.raises(ValueError, match=r"config differs .* in model.dim, train.lr; a resume may change only"):
        train(make_cfg("train.steps=8", "model.dim=24", "train.lr=2e-2"), resume=True)
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_resume_that_changes_the_resolved_precision_is_refused(make_cfg):
    """A device change under precision=auto switches bf16 <-> fp32: refused, not silently applied."""
    run = train(make_cfg("train.steps=4"))
    ckpt = list_checkpoints(run)[-1]
    state = torch.load(ckpt / STATE, weights_only=True)
    assert state["precision"] == "fp32"
    state["precision"] = "bf16"  # as if trained on CUDA with precision=auto
    torch.save(state, ckpt / STATE)
    with pytest.raises(ValueError, match=r"step_00000004 was trained in bf16, .* resolves to fp32"):
        train(make_cfg("train.steps=8"), resume=True)
