"""Ctrl-C between ``optimizer.step()`` and the step counter must not apply that step twice."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from hyperconn.train import Trainer, read_metrics, train
from hyperconn.train.checkpoint import WEIGHTS, list_checkpoints
from hyperconn.train.interrupt import InterruptGuard


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Python's own Ctrl-C handler for these tests: a shell that starts the suite in the background
    hands it SIGINT ignored, and the guard deliberately keeps an inherited SIG_IGN."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_guard_defers_sigint_inside_atomic_blocks_only():
    before = signal.getsignal(signal.SIGINT)
    with InterruptGuard() as guard:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        done = []
        with pytest.raises(KeyboardInterrupt), guard.atomic():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("rest of the block ran")
        assert done == ["rest of the block ran"]
        with guard.atomic():  # nothing pending any more
            pass
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_sigint_right_after_optimizer_step_is_not_applied_twice(make_cfg):
    reference = train(make_cfg(name="reference"))
    trainer = Trainer(make_cfg(name="cut"))
    real_step = trainer.optimizer.step

    def step_then_ctrl_c(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step == 5:  # the update of step 6 is applied, the counter still says 5
            os.kill(os.getpid(), signal.SIGINT)
        return out

    trainer.optimizer.step = step_then_ctrl_c
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    finally:
        trainer.close()
    run = trainer.run_dir
    assert list_checkpoints(run)[-1].name == "step_00000006"  # weights and counter saved together
    train(make_cfg(name="cut"), resume=True)
    a = load_file(str(list_checkpoints(reference)[-1] / WEIGHTS))
    b = load_file(str(list_checkpoints(run)[-1] / WEIGHTS))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(r["step"], r["loss"]) for r in read_metrics(run) if r["loss"] is not None]
    assert rows == [(r["step"], r["loss"]) for r in read_metrics(reference) if r["loss"] is not None]
