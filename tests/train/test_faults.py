"""Fault injection: a `hyperconn train` subprocess killed (SIGKILL, SIGINT) at random moments over several
resumes ends with exactly the weights and the losses of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.support import MICRO

from hyperconn.fileio import is_temp_name
from hyperconn.train import is_finished, read_metrics, train
from hyperconn.train.checkpoint import WEIGHTS, list_checkpoints

FAULT_RUN = ["train.steps=40", "train.checkpoint_interval=3", "train.eval_interval=10", "train.keep_checkpoints=2"]


def launch(run, sets, resume: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "hyperconn.cli", "train", "--preset", "demo", "--out", str(run)]
    argv += [x for s in sets for x in ("--set", s)]
    return subprocess.Popen(
        [*argv, "--resume"] if resume else argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def logged_step(run) -> int:
    """The step of the last complete row of metrics.csv (-1 before the first)."""
    try:
        text = (run / "metrics.csv").read_text()
    except FileNotFoundError:
        return -1
    rows = text[: text.rfind("\n") + 1].splitlines()[1:]
    return int(rows[-1].split(",")[0]) if rows else -1


def losses(run):
    return [(r["step"], r["loss"]) for r in read_metrics(run) if r["loss"] is not None]


@pytest.mark.slow
def test_random_sigkill_and_sigint_over_several_resumes_give_the_uninterrupted_run(
    corpus, cache_dir, make_cfg, tmp_path
):
    sets = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO, *FAULT_RUN]
    reference = train(make_cfg(*FAULT_RUN, name="reference"))
    run = tmp_path / "killed"
    rng = random.Random(0)
    # increasing kill points: each (resumed) run must train past the previous one to reach its own
    targets = sorted(rng.sample(range(2, 38, 5), 6))
    landed = {signal.SIGKILL: 0, signal.SIGINT: 0}
    for attempt, target in enumerate(targets):
        sig = signal.SIGKILL if attempt % 2 == 0 else signal.SIGINT
        proc = launch(run, sets, resume=(run / "config.yaml").is_file())
        while proc.poll() is None and logged_step(run) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))  # into the next step, an eval or a checkpoint write
        if proc.poll() is None:
            proc.send_signal(sig)
            landed[sig] += 1
        _, err = proc.communicate(timeout=120)
        # 130: Ctrl-C handled (checkpoint saved); -SIGINT: it landed after the run was done, at exit
        assert proc.returncode in (0, 130, -signal.SIGINT, -signal.SIGKILL), err.decode()[-2000:]
        if b"interrupted at step" in err:
            assert b"checkpoint saved in" in err
    assert landed == {signal.SIGKILL: 3, signal.SIGINT: 3}, landed  # every kill hit a running trainer
    if not is_finished(run):
        proc = launch(run, sets, resume=True)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert is_finished(run)
    a = load_file(str(list_checkpoints(reference)[-1] / WEIGHTS))
    b = load_file(str(list_checkpoints(run)[-1] / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(run) == losses(reference)  # every step once, with the same loss
    assert [p for p in run.rglob("*") if is_temp_name(p.name)] == []
