"""What a run prints and logs: a progress line per log interval off-terminal (no tqdm bar of
carriage returns), and ``elapsed_s`` that keeps counting across a resume."""

from __future__ import annotations

import re

import pytest

from hyperconn.train import read_metrics, train

pytestmark = pytest.mark.slow  # every test trains a run


def test_off_terminal_progress_is_a_line_per_log_interval(make_cfg, capsys):
    cfg = make_cfg("train.progress=true", "train.log_interval=2")
    train(cfg)
    err = capsys.readouterr().err
    assert "\r" not in err  # no tqdm bar: stderr is not a terminal under pytest
    steps = [int(m) for m in re.findall(r"^step (\d+)/8  loss ", err, flags=re.M)]
    assert steps == [2, 4, 6, 8]


def test_progress_false_prints_no_step_lines(make_cfg, capsys):
    train(make_cfg("train.progress=false"))
    assert not re.search(r"^step \d+/", capsys.readouterr().err, flags=re.M)


def test_elapsed_s_continues_after_a_resume(make_cfg):
    first = train(make_cfg("train.steps=4", "train.warmup_steps=1"))
    before = [r for r in read_metrics(first) if r["elapsed_s"] is not None]
    at_4 = max(r["elapsed_s"] for r in before if r["step"] <= 4)
    assert at_4 > 0
    train(make_cfg("train.steps=8", "train.warmup_steps=1"), resume=True)
    rows = [r for r in read_metrics(first) if r["elapsed_s"] is not None]
    later = [r["elapsed_s"] for r in rows if r["step"] > 4]
    assert later and min(later) > at_4  # restarting at 0 would put step 5's row below step 4's
    by_step = [r["elapsed_s"] for r in sorted(rows, key=lambda r: (r["step"], r["elapsed_s"]))]
    assert by_step == sorted(by_step)
