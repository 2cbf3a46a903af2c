"""The training loop on a microscopic model: learning, run directory, resume, faults."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import hyperconn.train.step as step_mod
from hyperconn.train import NonFiniteLossError, Trainer, evaluate, is_finished, load_run, read_metrics, train
from hyperconn.train.checkpoint import list_checkpoints
from hyperconn.train.metrics import COLUMNS


def patch_loss(monkeypatch, at_call: int, action):
    """Make the ``at_call``-th (1-based) training loss call (and later ones) do ``action(loss)``."""
    original = step_mod.lm_loss
    calls = {"n": 0}

    def loss_fn(model, x, y):
        loss = original(model, x, y)
        if model.training:
            calls["n"] += 1
            if calls["n"] >= at_call:
                return action(loss)
        return loss

    monkeypatch.setattr(step_mod, "lm_loss", loss_fn)


def train_losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if r["loss"] is not None]


@pytest.mark.slow
def test_loss_goes_down_and_the_run_dir_is_complete(make_cfg):
    cfg = make_cfg("train.steps=24", "train.eval_interval=12", "train.checkpoint_interval=12")
    run = train(cfg)
    rows = read_metrics(run)
    assert tuple(rows[0]) == COLUMNS
    evals = [r for r in rows if r["val_loss"] is not None]
    assert [r["step"] for r in evals] == [0, 12, 24]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert all(r["val_bpb"] > 0 for r in evals)
    steps = [r for r in rows if r["loss"] is not None]
    assert [r["step"] for r in steps] == list(range(1, 25))
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in steps)
    assert steps[-1]["tokens"] == 24 * 4 * 16
    assert (run / "config.yaml").is_file() and any((run / "tensorboard").iterdir())
    assert [p.name for p in list_checkpoints(run)] == ["step_00000012", "step_00000024"]
    assert is_finished(run)
    done = json.loads((run / "DONE").read_text())
    assert done["step"] == 24 and done["val_loss"] == pytest.approx(evals[-1]["val_loss"])
    hres = read_metrics(run, "h_res.csv")
    assert len(hres) == 3 * 4  # 3 evals x (2 layers x 2 connections)
    assert {r["connection"] for r in hres} == {"l00.attn", "l00.mlp", "l01.attn", "l01.mlp"}
    assert all(r["spectral_norm"] == pytest.approx(1.0, abs=1e-4) for r in hres)  # sHC: exactly 1


@pytest.mark.slow
def test_resume_after_interrupt_matches_the_uninterrupted_run(make_cfg, monkeypatch):
    full = train(make_cfg(name="full"))
    cfg = make_cfg(name="cut")

    def interrupt(loss):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        patch_loss(m, 6, interrupt)  # interrupted during step 6: steps 1..5 done
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    cut = cfg.run_dir
    assert not is_finished(cut)
    assert list_checkpoints(cut)[-1].name == "step_00000005"
    train(make_cfg(name="cut"), resume=True)
    assert train_losses(cut) == train_losses(full)  # exactly equal, every step
    a = load_file(str(list_checkpoints(full)[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(cut)[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_can_extend_a_finished_run_but_not_change_it(make_cfg):
    run = train(make_cfg("train.steps=4"))
    with pytest.raises(ValueError, match="config differs .* model.dim"):
        train(make_cfg("train.steps=8", "model.dim=24"), resume=True)
    train(make_cfg("train.steps=8"), resume=True)
    assert [s for s, _ in train_losses(run)] == list(range(1, 9))
    assert json.loads((run / "DONE").read_text())["step"] == 8


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch):
    cfg = make_cfg()
    patch_loss(monkeypatch, 6, lambda loss: loss * float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 5.*step_00000004"):
        train(cfg)
    assert not is_finished(cfg.run_dir)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step_00000004"]
    weights = load_file(str(list_checkpoints(cfg.run_dir)[0] / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.parametrize(
    "bad",
    [
        "model.connection.num_streams=0",
        "model.connection.kind=nope",
        "data.source=/no/such/corpus.txt",
        "train.seq_len=64",
        "preset=nope",
    ],
)
def test_bad_config_fails_before_any_file_is_written(make_cfg, tmp_path, bad):
    with pytest.raises((ValueError, FileNotFoundError)):
        make_cfg(bad, name="bad")
    assert not (tmp_path / "bad").exists()


def test_load_run_evaluate_and_generate(make_cfg):
    run = train(make_cfg("train.steps=4"))
    model, cfg, tokenizer = load_run(run)
    assert not model.training and cfg.model.vocab_size == tokenizer.vocab_size
    result = evaluate(run, max_batches=2, device="cpu")
    assert result["step"] == 4 and math.isfinite(result["val_loss"])
    assert result["val_bpb"] > 0
    ids = torch.tensor([tokenizer.encode("the king")])
    out = model.generate(ids, 10, temperature=0)
    assert out.shape == (1, ids.shape[1] + 10)
    assert tokenizer.decode(out[0].tolist()).startswith("the king")


def test_grad_accumulation_averages_the_micro_batches(make_cfg):
    """With 2 micro-batches the step's loss and gradient are the means over both micro-batches."""
    trainer = Trainer(make_cfg("train.grad_accum=2", "train.grad_clip=1e9", name="accum"))
    try:
        model = trainer.raw_model
        device = trainer.info.device
        batches = [[t.to(device) for t in trainer.batcher.batch(0, micro)] for micro in range(2)]
        losses = [step_mod.lm_loss(model, x, y) for x, y in batches]
        expected_loss = sum(losses) / 2
        expected_grads = torch.autograd.grad(expected_loss, list(model.parameters()))
        trainer.optimizer.step = lambda: None  # keep the gradients for inspection
        trainer.optimizer.zero_grad = lambda set_to_none=True: None
        loss, _, _ = trainer.train_step()
        assert loss == pytest.approx(expected_loss.item(), rel=1e-5)
        for p, g in zip(model.parameters(), expected_grads, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    finally:
        trainer.close()


@pytest.mark.slow
def test_compiled_run_matches_eager_and_says_its_compile_time(make_cfg, capsys):
    """``train.compile=true`` trains the same math (losses agree to rounding) and prints the
    one-off compile time once; ``train.compile=false`` stays the plain path."""
    runs, dirs = {}, {}
    for flag in ("false", "true"):
        cfg = make_cfg("train.steps=3", "train.eval_interval=3", f"train.compile={flag}", name=f"compile-{flag}")
        dirs[flag] = train(cfg)
        runs[flag] = train_losses(dirs[flag])
    said = capsys.readouterr().err
    assert said.count("torch.compile: the first training step took") == 1
    assert [s for s, _ in runs["true"]] == [s for s, _ in runs["false"]]
    for (_, eager), (_, compiled) in zip(runs["false"], runs["true"], strict=True):
        assert compiled == pytest.approx(eager, rel=1e-4)
    # the evaluation (eager in both runs) scores the same weights to rounding
    val = {f: [r["val_loss"] for r in read_metrics(d) if r.get("val_loss") is not None] for f, d in dirs.items()}
    assert len(val["true"]) == len(val["false"]) >= 1
    assert val["true"] == pytest.approx(val["false"], rel=1e-4)

