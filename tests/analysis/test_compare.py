"""``compare`` end to end on a micro study: report, statistics, run reuse and refusal, re-rendering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import hyperconn.train
from hyperconn.analysis.compare import compare_command, load_study, run_compare, summary_table
from hyperconn.analysis.jobs import RunMismatchError, check_reuse
from hyperconn.analysis.stats import detectable_noncentrality, t_quantile
from hyperconn.analysis.study import Axis, CompareConfig, parse_axis, plan
from hyperconn.analysis.summarise import count_spikes
from hyperconn.cli import main

MICRO = (
    "model.dim=16", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=8",
    "model.mlp_dim=32", "train.seq_len=16", "train.batch_size=2", "train.eval_batches=1",
    "train.log_interval=1", "train.eval_interval=2", "train.warmup_steps=1", "train.checkpoint_interval=2",
    "train.progress=false", "train.threads=1",
)  # fmt: skip

SECTIONS = (
    "## Validation loss and bits per byte",
    "Δ vs residual",
    "## Paired differences of the final validation loss",
    "95% CI",
    "Student-t quantile at 0.975 and k−1 degrees of freedom",
    "Resolved:",
    "Holm step-down over the 1 pair(s)",
    "| p_holm | mdd_80 | verdict |",
    "- code: ",
    "Final numbers: ",
    "--report-only",
    "training tokens per run: residual-n1-s0 128",
    "![training loss](loss_curves.png)",
    "## Throughput, memory and parameters",
    "activations (MB)",
    "## Stability",
    "## Diagnostics of H_res",
    "composite fwd gain",
    "## Sinkhorn error",
    "## Connection parameters per layer vs n",
    "refused",
)


def small_corpus(root) -> Path:
    """A ~20 KB text file: every run's final evaluation scores its whole held-out split, so the
    micro studies train on this instead of the bundled corpus (514,764 held-out tokens)."""
    path = Path(root) / "corpus.txt"
    if not path.exists():
        words = ["the", "king", "queen", "shall", "speak", "to", "thee", "and", "my", "lord"]
        path.write_text("\n".join(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(4 + i % 6)) + "."
                                  for i in range(800)))
    return path


def micro_study(root, **kw) -> CompareConfig:
    data = (f"data.source={small_corpus(root)}", f"data.cache_dir={root / 'cache'}")
    base = dict(preset="demo", kinds=("residual", "mhc"), num_streams=2, seeds=2, out=root / "out", steps=4,
                overrides=(*MICRO, *data), analyze_batches=1, bench_rounds=2)
    return CompareConfig(**{**base, **kw}).validate()


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    cfg = micro_study(root)
    return cfg, run_compare(cfg, log=lambda msg: None)


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real_train = hyperconn.train.train

    def train(tcfg, resume=False, overwrite=False):
        calls.append((tcfg.train.out_dir, resume))
        return real_train(tcfg, resume=resume, overwrite=overwrite)

    monkeypatch.setattr(hyperconn.train, "train", train)
    return calls


@pytest.mark.slow
def test_report_has_every_section_and_summary_records_tokens_and_data(compared):
    cfg, summary = compared
    report = (cfg.out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for figure in ("loss_curves.png", "val_loss_curves.png", "diagnostics_per_layer.png", "composite_gain.png",
                   "sinkhorn_error.png", "connection_params_vs_n.png"):
        assert (cfg.out / figure).stat().st_size > 0
    saved = json.loads((cfg.out / "summary.json").read_text())
    assert list(saved["groups"]) == ["residual-n1", "mhc-n2"]
    # 4 steps x 2 sequences x 16 tokens per run
    assert saved["train_tokens"] == {f"{g}-s{s}": 128 for s in (0, 1) for g in ("residual-n1", "mhc-n2")}
    split = saved["data"]["split"]
    assert saved["data"]["source"] == str(small_corpus(cfg.out.parent)) and saved["data"]["tokenizer"] == "byte"
    assert split["val_documents"] >= 1 and split["val_bytes"] > 0
    assert f"split: train {split['train_documents']:,} documents / {split['train_bytes']:,} bytes" in report
    # the final evaluation scored the whole held-out split: every token but the first
    assert all(v == split["val_tokens"] - 1 for g in saved["groups"].values() for v in g["val_tokens"].values())
    mhc = saved["groups"]["mhc-n2"]
    stability = mhc["stability"]  # DONE's record of every step, else the logged rows only
    assert (stability["spike_definition"] if stability else saved["logged_rows_spike_definition"]) in report
    assert mhc["final_step"] == 4 and mhc["val_loss"]["n"] == 2 and mhc["seeds"] == [0, 1]
    assert mhc["params_connections"] > 0 and saved["groups"]["residual-n1"]["params_connections"] == 0
    assert len(mhc["sinkhorn_error_curve"]) == 50
    assert "| mhc |" in summary_table(summary)
    memory = json.loads((cfg.out / "memory.json").read_text())["groups"]
    assert memory["mhc-n2"]["activations_mb"] > memory["residual-n1"]["activations_mb"] > 0  # n = 2 streams
    bench = json.loads((cfg.out / "throughput.json").read_text())
    assert bench["rounds"] == 2 and set(bench["groups"]) == {"residual-n1", "mhc-n2"}
    tps = {g: e["tokens_per_s"] for g, e in bench["groups"].items()}
    assert mhc["overhead_pct_vs_residual"] == pytest.approx(100 * (tps["residual-n1"] / tps["mhc-n2"] - 1))


@pytest.mark.slow
def test_paired_difference_matches_a_hand_computation(compared):
    cfg, summary = compared
    (pair,) = summary["paired_differences"]
    assert (pair["a"], pair["b"], pair["seeds"]) == ("residual-n1", "mhc-n2", [0, 1])
    a, b = (summary["groups"][g]["val_loss_by_seed"] for g in ("residual-n1", "mhc-n2"))
    d = [a[s] - b[s] for s in ("0", "1")]
    mean, sd = (d[0] + d[1]) / 2, abs(d[0] - d[1]) / math.sqrt(2)
    half = 12.706204736 * sd / math.sqrt(2)  # t_{0.975, 1}
    assert pair["mean"] == pytest.approx(mean) and pair["sd"] == pytest.approx(sd)
    assert pair["ci_low"] == pytest.approx(mean - half) and pair["ci_high"] == pytest.approx(mean + half)
    # one pair: Holm leaves p alone; dof 1 is Cauchy: two-sided p = 1 - 2 atan(|T|) / pi
    t_stat = mean / (sd / math.sqrt(2))
    assert pair["t_stat"] == pytest.approx(t_stat)
    assert pair["p"] == pytest.approx(1 - 2 * math.atan(abs(t_stat)) / math.pi) and pair["p_holm"] == pair["p"]
    assert pair["resolved"] == (pair["p"] < 0.05) == (not pair["ci_low"] <= 0 <= pair["ci_high"])
    # mdd_80: the noncentrality at which the dof-1 test has power 0.8 (tests/analysis/test_stats.py), times se
    assert pair["mdd_80"] == pytest.approx(detectable_noncentrality(1) * sd / math.sqrt(2))
    assert pair["mdd_80"] > (12.706204736 + t_quantile(0.8, 1)) * sd / math.sqrt(2)  # the central-t shortcut
    assert sorted(summary["provenance"]["by_run"]) == sorted(f"{g}-s{s}" for g in ("residual-n1", "mhc-n2")
                                                            for s in (0, 1))  # fmt: skip
    assert summary["unfinished"] == []
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736)


@pytest.mark.slow
def test_rerun_reuses_finished_resumes_interrupted_ignores_logging_keys(compared, spy):
    cfg, _ = compared
    residual_metrics = (cfg.out / "residual-n1-s0" / "metrics.csv").read_text()
    quieter = micro_study(cfg.out.parent, overrides=(*cfg.overrides, "train.log_interval=3", "train.threads=2",
                                                      "train.progress=true", "train.compile=true"))
    run_compare(quieter, log=lambda msg: None)
    assert spy == []
    assert (cfg.out / "residual-n1-s0" / "metrics.csv").read_text() == residual_metrics
    (cfg.out / "mhc-n2-s1" / "DONE").unlink()  # as if interrupted after its last checkpoint
    run_compare(cfg, log=lambda msg: None)
    assert spy == [(str(cfg.out / "mhc-n2-s1"), True)]
    assert hyperconn.train.is_finished(cfg.out / "mhc-n2-s1")


@pytest.mark.slow
def test_different_settings_are_refused_before_training(compared, spy):
    cfg, _ = compared
    before = (cfg.out / "mhc-n2-s0" / "metrics.csv").read_text()
    other = micro_study(cfg.out.parent, overrides=(*cfg.overrides, "train.lr=1e-3"), steps=5)
    with pytest.raises(RunMismatchError) as err:
        run_compare(other, log=lambda msg: None)
    message = str(err.value)
    assert "train.lr: the run has 0.003, this invocation asks 0.001" in message
    assert "train.steps: the run has 4, this invocation asks 5" in message
    assert "mhc-n2-s1" in message and "log_interval" not in message
    assert spy == [] and (cfg.out / "mhc-n2-s0" / "metrics.csv").read_text() == before
    with pytest.raises(RunMismatchError):
        run_compare(other, log=lambda msg: None, report_only=True)


@pytest.mark.slow
def test_keys_missing_from_an_old_config_take_their_defaults(compared):
    cfg, _ = compared
    path = cfg.out / "residual-n1-s0" / "config.yaml"
    text = path.read_text()
    try:  # a config written before these keys existed
        path.write_text("\n".join(line for line in text.splitlines()
                                  if not line.strip().startswith(("fsdp:", "keep_checkpoints:", "val_fraction:"))))
        check_reuse(plan(cfg))
        path.write_text(text.replace("weight_decay: 0.1", "weight_decay: 0.2"))
        with pytest.raises(RunMismatchError, match="train.weight_decay: the run has 0.2"):
            check_reuse(plan(cfg))
    finally:
        path.write_text(text)


@pytest.mark.slow
def test_corrupt_config_is_refused_not_overwritten(compared, spy):
    cfg, _ = compared
    path = cfg.out / "mhc-n2-s0" / "config.yaml"
    text = path.read_text()
    try:
        path.write_text(text[: len(text) // 2] + "\n  : [unclosed\n")
        with pytest.raises(RunMismatchError, match="mhc-n2-s0:\n    unreadable config.yaml"):
            run_compare(cfg, log=lambda msg: None)
        assert spy == [] and path.read_text().endswith("[unclosed\n")
    finally:
        path.write_text(text)


@pytest.mark.slow
def test_report_only_rerenders_without_training(compared, spy, capsys):
    cfg, _ = compared
    (cfg.out / "report.md").unlink()
    (cfg.out / "summary.json").unlink()
    run_compare(cfg, log=lambda msg: None, report_only=True)
    assert (cfg.out / "report.md").exists() and spy == []
    assert load_study(cfg.out).to_dict() == cfg.to_dict()
    (cfg.out / "report.md").unlink()
    assert main(["compare", "--report-only", "--out", str(cfg.out)]) == 0
    assert (cfg.out / "report.md").exists() and spy == []
    assert "| mhc |" in capsys.readouterr().out


@pytest.mark.slow
def test_axis_study_names_runs_and_groups_the_report(tmp_path):
    axis = Axis("model.connection.options.sigma_bias", (1.0, 2.0))
    cfg = micro_study(tmp_path, kinds=("shc",), seeds=1, steps=2, bench_rounds=0, axes=(axis,))
    summary = run_compare(cfg, log=lambda msg: None)
    assert sorted(p.name for p in cfg.out.iterdir() if p.is_dir()) == ["shc-n2-sb1.0-s0", "shc-n2-sb2.0-s0"]
    from hyperconn.train import load_config

    assert load_config(cfg.out / "shc-n2-sb2.0-s0" / "config.yaml").model.connection.options == {"sigma_bias": 2.0}
    assert summary["groups"]["shc-n2-sb1.0"]["axes"] == {"sb": 1.0}
    report = (cfg.out / "report.md").read_text()
    assert "## By axis" in report and "sb = 1.0" in report and "sb = 2.0" in report
    assert "--axis model.connection.options.sigma_bias=1.0,2.0" in summary["command"]


def test_count_spikes():
    flat = [2.0] * 12
    assert count_spikes(flat) == 0
    assert count_spikes([*flat, 2.5, 2.0, 3.0]) == 2  # 2.5 > 1.2 * 2 and 3.0 > 1.2 * 2


@pytest.mark.slow
def test_analyze_command(compared, tmp_path, capsys):
    cfg, _ = compared
    assert main(["analyze", str(cfg.out / "mhc-n2-s0"), "--batches", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert len(data["layers"]) == 4  # 2 blocks x (attention, MLP)
    split = json.loads((cfg.out / "summary.json").read_text())["data"]["split"]
    assert data["info"]["val documents"] == split["val_documents"] and data["info"]["val tokens"] == split["val_tokens"]
    for name in ("analysis.md", "h_res_heatmaps.png", "per_layer.png", "composite_gain.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "composite forward/backward gain" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_the_reported_command_rebuilds_the_study():
    """The report's ``command`` line, run again, asks for the same study: axes, overrides, the
    pre-specified Holm family (``--pairs``) and a non-default ``--batches`` included."""
    import argparse
    import shlex

    from hyperconn.analysis.commands import register, study_from_args

    cfg = CompareConfig(
        preset="demo", kinds=("residual", "shc"), num_streams=(4,), seeds=2, out="runs/x", steps=30,
        overrides=("train.batch_size=4",), axes=(parse_axis("shc:train.lr_scale=0.5,2"),), analyze_batches=3,
        pairs=("shc-n4-lrx0.5:residual-n1", "shc-n4-lrx2:residual-n1"),
    ).validate()  # fmt: skip
    words = shlex.split(compare_command(cfg))
    assert words[:2] == ["hyperconn", "compare"] and "--pairs" in words and "--batches" in words
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    again = study_from_args(parser.parse_args(words[1:]))
    assert again.to_dict() == cfg.to_dict()
