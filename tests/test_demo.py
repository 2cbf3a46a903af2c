"""The sentence under ``hyperconn compare``'s table (``make demo``): which preset and model the
overhead column is measured for, and why it differs from the README's ``small``-preset figure."""

from __future__ import annotations

import hyperconn.analysis.compare
from hyperconn.analysis.study import CompareConfig
from hyperconn.cli import main
from hyperconn.demo import overhead_note


def summary(*overheads):
    return {"groups": {f"g{i}": {"overhead_pct_vs_residual": oh} for i, oh in enumerate(overheads)}}


def study(preset="demo", overrides=()):
    kinds = ("residual", "shc")
    return CompareConfig(preset=preset, kinds=kinds, num_streams=4, steps=50, overrides=overrides).validate()


def test_the_demo_names_its_model_and_why_its_overhead_is_larger():
    note = overhead_note(study(), summary(0.0, 55.6))
    assert note.startswith("Overhead measured on this machine for preset 'demo' (4 layers, d 128);")
    assert "preset 'small' (12 layers, d 512)" in note and "fixed cost is a larger share" in note
    assert note.count(".") == 1 and "\n" not in note  # one sentence


def test_the_note_follows_overrides_and_the_readme_model():
    wide = study(overrides=("model.dim=512", "model.n_layers=12", "model.n_heads=8", "model.head_dim=64"))
    note = overhead_note(wide, summary(0.0, 16.0))
    readme_model = "preset 'demo' (12 layers, d 512), the model of the README's speed figures."
    assert note == f"Overhead measured on this machine for {readme_model}"
    assert overhead_note(study(), summary(None, None)) is None  # no throughput measured: nothing to explain


def test_compare_prints_the_note_under_its_table(tmp_path, monkeypatch, capsys):
    def fake_run_compare(cfg, log, report_only, allow_mixed_commits):
        return summary(0.0, 60.0)

    monkeypatch.setattr(hyperconn.analysis.compare, "run_compare", fake_run_compare)
    monkeypatch.setattr(hyperconn.analysis.compare, "summary_table", lambda s: "| the table |")
    args = ["compare", "--preset", "demo", "--kinds", "residual,shc", "--num-streams", "4", "--seeds", "1"]
    assert main([*args, "--steps", "50", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| the table |"
    assert out[1].startswith("Overhead measured on this machine for preset 'demo' (4 layers, d 128);")
