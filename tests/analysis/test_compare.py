"""``compare`` end to end on a micro setup, and ``analyze`` on one of its runs."""

from __future__ import annotations

import json

import pytest

import shc.train
from shc.analysis.compare import CompareConfig, count_spikes, run_compare, summary_table
from shc.cli import main

MICRO = (
    "model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=8",
    "model.mlp_dim=32", "train.seq_len=16", "train.batch_size=2", "train.eval_batches=1",
    "train.log_interval=1", "train.eval_interval=2", "train.warmup_steps=1", "train.checkpoint_interval=2",
    "train.progress=false", "train.threads=1",
)  # fmt: skip

SECTIONS = (
    "## Validation loss and bits per byte",
    "Δ vs residual",
    "![training loss](loss_curves.png)",
    "## Throughput, memory and parameters",
    "overhead",
    "activations (MB)",
    "params in connections",
    "## Stability",
    "loss spike is",
    "max grad norm",
    "## Diagnostics of H_res",
    "composite fwd gain",
    "## Sinkhorn error",
    "## Connection parameters per layer vs n",
    "refused",
)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    overrides = (*MICRO, f"data.cache_dir={root / 'cache'}")
    cfg = CompareConfig("demo", ("residual", "mhc"), streams=2, seeds=1, out=root / "out", steps=4,
                        overrides=overrides, analyze_batches=1, bench_rounds=2).validate()
    summary = run_compare(cfg, log=lambda msg: None)
    return cfg, summary


def test_report_has_every_section(compared):
    cfg, summary = compared
    report = (cfg.out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for figure in ("loss_curves.png", "val_loss_curves.png", "diagnostics_per_layer.png", "composite_gain.png",
                   "sinkhorn_error.png", "connection_params_vs_n.png"):
        assert (cfg.out / figure).stat().st_size > 0
    saved = json.loads((cfg.out / "summary.json").read_text())
    assert set(saved["methods"]) == {"residual", "mhc"}
    mhc = saved["methods"]["mhc"]
    assert mhc["final_step"] == 4 and mhc["val_loss"]["n"] == 1
    assert mhc["val_loss_diff_to_residual"] == pytest.approx(
        mhc["val_loss"]["mean"] - saved["methods"]["residual"]["val_loss"]["mean"]
    )
    assert mhc["params_connections"] > 0 and saved["methods"]["residual"]["params_connections"] == 0
    assert len(mhc["sinkhorn_error_curve"]) == 50
    table = saved["connection_parameters_per_layer"]["table"]
    assert table["mhc_lite"]["9"] is None and table["kromhc"]["3"] is None and table["residual"]["2"] is None
    assert "| mhc |" in summary_table(summary, cfg.methods)
    memory = json.loads((cfg.out / "memory.json").read_text())["methods"]
    assert set(memory) == {"residual", "mhc"}
    assert memory["mhc"]["activations_mb"] > memory["residual"]["activations_mb"] > 0  # n = 2 streams
    assert mhc["memory"] == memory["mhc"]
    bench = json.loads((cfg.out / "throughput.json").read_text())
    assert {m: len(t) for m, t in bench["step_s"].items()} == {"residual": 2, "mhc": 2}
    assert mhc["overhead_pct_vs_residual"] == pytest.approx(
        100 * (bench["tokens_per_s"]["residual"] / bench["tokens_per_s"]["mhc"] - 1)
    )


def test_rerun_skips_finished_and_resumes_interrupted(compared, monkeypatch):
    cfg, _ = compared
    calls = []
    real_train = shc.train.train

    def spy(tcfg, resume=False, overwrite=False):
        calls.append((tcfg.model.connection.kind, resume))
        return real_train(tcfg, resume=resume, overwrite=overwrite)

    monkeypatch.setattr(shc.train, "train", spy)
    residual_metrics = (cfg.run_dir("residual", 0) / "metrics.csv").read_text()
    run_compare(cfg, log=lambda msg: None)
    assert calls == []
    assert (cfg.run_dir("residual", 0) / "metrics.csv").read_text() == residual_metrics

    (cfg.run_dir("mhc", 0) / "DONE").unlink()  # as if interrupted after its last checkpoint
    run_compare(cfg, log=lambda msg: None)
    assert calls == [("mhc", True)]
    assert shc.train.is_finished(cfg.run_dir("mhc", 0))


def test_analyze_command(compared, tmp_path, capsys):
    cfg, _ = compared
    assert main(["analyze", str(cfg.run_dir("mhc", 0)), "--batches", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert len(data["layers"]) == 4  # 2 blocks x (attention, MLP)
    assert [layer["index"] for layer in data["layers"]] == [0, 1, 2, 3]
    for name in ("analysis.md", "h_res_heatmaps.png", "per_layer.png", "composite_gain.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "composite forward/backward gain" in capsys.readouterr().out


def test_bad_input(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown method"):
        CompareConfig("demo", ("residual", "nope")).validate()
    with pytest.raises(ValueError, match="seeds"):
        CompareConfig("demo", ("residual",), seeds=0).validate()
    with pytest.raises(ValueError, match="bench_rounds"):
        CompareConfig("demo", ("residual",), bench_rounds=-1).validate()
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_count_spikes():
    flat = [2.0] * 12
    assert count_spikes(flat) == 0
    assert count_spikes([*flat, 2.5, 2.0, 3.0]) == 2  # 2.5 > 1.2 * 2 and 3.0 > 1.2 * 2
