"""The layout's edge checks: a layout that cannot run is refused with one line naming the value and
what is allowed (exit 2, nothing written); the mesh coordinates of a rank."""

from __future__ import annotations

import re

import pytest
from tests.support import MICRO

from hyperconn.cli import main
from hyperconn.train import build_config
from hyperconn.train.layout import Layout, check_layout


def _argv(corpus, cache_dir, out, *sets):
    base = [f"data.source={corpus}", f"data.cache_dir={cache_dir}", *MICRO, "model.n_kv_heads=2", *sets]
    return ["train", "--preset", "demo", "--kind", "shc", "--out", str(out), *[x for s in base for x in ("--set", s)]]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["train.tensor_parallel=2"],
            r"train.tensor_parallel=2 needs 2 processes: launch with torchrun --nproc_per_node 2",
        ),
        (["train.pipeline_parallel=2"], r"train.pipeline_parallel=2 needs 2 processes"),
        (["train.tensor_parallel=3"], r"train.tensor_parallel=3 does not divide model.n_heads=2"),
        (
            ["train.tensor_parallel=2", "train.seq_len=15"],
            r"does not divide train.seq_len=15: the streams are sequence-sharded",
        ),
        (["train.pipeline_parallel=3"], r"train.pipeline_parallel=3 does not divide model.n_layers=2"),
        (
            ["train.pipeline_parallel=2", "model.tie_embeddings=true"],
            r"cannot share one weight; set model.tie_embeddings=false",
        ),
        (["train.tensor_parallel=2", "train.pipeline_parallel=2", "train.fsdp=true"], r"FSDP2 on a 3-D mesh"),
        (["train.pipeline_parallel=2", "train.compile=true"], r"runs eagerly: set train.compile=false"),
        (
            ["train.tensor_parallel=2", "train.checkpoint_format=full"],
            r"writes sharded checkpoints: set train.checkpoint_format=sharded",
        ),
        (["train.checkpoint_format=zip"], r"train.checkpoint_format must be one of auto, full, sharded, got 'zip'"),
        (["train.tensor_parallel=0"], r"train.tensor_parallel must be an integer >= 1, got 0"),
    ],
)
def test_a_layout_that_cannot_run_is_one_line_and_exit_2(corpus, cache_dir, tmp_path, capsys, sets, message):
    out = tmp_path / "run"
    assert main(_argv(corpus, cache_dir, out, *sets)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hyperconn train: error: ")
    assert re.search(message, err), err
    assert not out.exists()  # nothing written


def test_a_world_the_layout_does_not_divide_is_refused():
    cfg = build_config("demo", overrides=["train.tensor_parallel=2"])
    with pytest.raises(ValueError, match=r"train.tensor_parallel=2 = 2 does not divide the world size 3"):
        check_layout(cfg.train, cfg.model, 3)
    check_layout(cfg.train, cfg.model, 4)  # tp 2 x dp 2


def test_the_mesh_coordinates_put_tp_fastest():
    coords = [(lay.pp_rank, lay.dp_rank, lay.tp_rank) for lay in (Layout(8, tp=2, pp=2, rank=r) for r in range(8))]
    assert coords == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
    assert Layout(8, tp=2, pp=2).dp == 2
    assert Layout(2, fsdp=True).sharded and not Layout(2).sharded and Layout(2, tp=2).sharded


@pytest.mark.slow
def test_sharded_on_a_run_that_was_full_is_refused_and_writes_nothing(corpus, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(corpus, cache_dir, out, "train.steps=2", "train.warmup_steps=1")) == 0
    assert "checkpoint_format: full" in (out / "config.yaml").read_text()  # auto on one process
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    argv = _argv(corpus, cache_dir, out, "train.steps=3", "train.warmup_steps=1", "train.checkpoint_format=sharded")
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.checkpoint_format" in err, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_1f1b_needs_as_many_micro_batches_as_stages():
    with pytest.raises(ValueError, match=r"train.pipeline_schedule=1f1b needs train.grad_accum .* >= train.pipel"):
        build_config("demo", overrides=["train.pipeline_parallel=2", "train.pipeline_schedule=1f1b"])
    with pytest.raises(ValueError, match=r"train.pipeline_schedule must be one of gpipe, 1f1b, got 'zb'"):
        build_config("demo", overrides=["train.pipeline_schedule=zb"])
    cfg = build_config(
        "demo", overrides=["train.pipeline_parallel=2", "train.pipeline_schedule=1f1b", "train.grad_accum=2"]
    )
    assert cfg.train.pipeline_schedule == "1f1b"
