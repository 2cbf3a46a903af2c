"""`hyperconn plan`: the computed bytes per rank follow from the parameter count and the layout, and
bad options are one line, exit 2."""

from __future__ import annotations

import pytest

from hyperconn.cli import main
from hyperconn.train.plan import count, rows


def test_the_bytes_per_rank_follow_the_layout():
    cfg, counts = count("7b", "mhc", 4)
    assert 6.5e9 < counts.total < 7.0e9  # a 7B-shaped model with n = 4 connections
    assert counts.tp_sharded < counts.total
    by = {r["layout"]: r for r in rows("7b", "mhc", 4, 64, 8, 4, 4096, 1, 8)}
    assert set(by) == {"DDP 64", "FSDP2 64", "TP 8 x DP 8", "TP 8 x FSDP2 8", "PP 4 x DP 16"}
    ddp, fsdp, tp, tpf, pp = (by[k] for k in ("DDP 64", "FSDP2 64", "TP 8 x DP 8", "TP 8 x FSDP2 8", "PP 4 x DP 16"))
    assert ddp["params"] == counts.total and ddp["weights"] == 4 * counts.total and ddp["adamw"] == 8 * counts.total
    assert fsdp["params"] == pytest.approx(counts.total / 64)
    assert tp["params"] == pytest.approx(counts.tp_sharded / 8 + counts.total - counts.tp_sharded)
    assert tpf["params"] == pytest.approx(tp["params"] / 8)
    assert pp["params"] == counts.per_block * cfg.n_layers // 4 + max(counts.ends_first, counts.ends_last)
    assert tp["activations"] < ddp["activations"] < pp["activations"]  # TP splits them, GPipe keeps 8
    assert ddp["comm"] == pytest.approx(2 * 63 / 64 * 4 * counts.total)  # one ring all-reduce of fp32 grads


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shapes", "13b"], "--shapes: unknown shape '13b'"),
        (["--gpus", "8,x"], "--gpus must be comma-separated integers >= 1"),
        (["--tp", "0"], "--tp must be an integer >= 1, got 0"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(capsys, argv, message):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
