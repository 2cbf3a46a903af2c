"""Restating a committed summary from its own data: layer averages without the connections skipped
as inert, Δ vs the residual of the same axis values, the pairs under today's statistics; and the
committed summaries under docs/results/ are restated (what scripts/restate_summaries.py writes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hyperconn.analysis.render import report_markdown
from hyperconn.analysis.restate import identity_values, restate, restate_structure, skipped_layers
from hyperconn.analysis.stats import mdd
from hyperconn.analysis.summarise import matching_residual, paired_differences, versus_residual

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted({p.parent for g in ("docs/results/study-*/summary.json", "docs/results/study-*/*/summary.json")
                    for p in ROOT.glob(g)})  # fmt: skip
LAYERS, N = 8, 4


def old_group(kind: str, skipped: list[int], rng: np.random.Generator, axes: dict | None = None) -> tuple[dict, dict]:
    """A group as commit a03ecd0 wrote it (skipped layers counted as the identity) and, beside it,
    every diagnostic's per-layer values over the learned layers only."""
    ident = identity_values(N)
    learned = {key: rng.uniform(0.1, 2.0, LAYERS) for key in ident}
    counted = {key: [ident[key] if i in skipped else float(v[i]) for i in range(LAYERS)] for key, v in learned.items()}
    losses = {str(s): float(3.0 + rng.normal(0, 0.01)) for s in range(3)}
    entry = {
        "method": kind, "streams": N, "axes": axes or {},
        "val_loss": {"mean": float(np.mean(list(losses.values()))), "n": 3, "values": list(losses.values())},
        "val_loss_by_seed": losses, "tokens_per_s": None,
        "diagnostics": {"mean": {key: float(np.mean(v)) for key, v in counted.items()},
                        "worst": {key: float(np.max(v)) + 1.0 for key, v in counted.items()},
                        "composite": {"forward_gain_max": 1.5}},
        "per_layer": {"identity_distance": counted["identity_distance"], "negative_mass": counted["negative_mass"]},
    }  # fmt: skip
    truth = {key: float(np.mean([v[i] for i in range(LAYERS) if i not in skipped])) for key, v in learned.items()}
    return entry, truth


def old_summary(rng: np.random.Generator) -> tuple[dict, dict]:
    groups, truths = {}, {}
    for name, kind, skipped in (("residual-n1", "residual", []), ("shc-n4", "shc", [0, LAYERS - 1]),
                                ("mhc-n4", "mhc", [LAYERS - 1]), ("hc-n4", "hc", [])):  # fmt: skip
        groups[name], truths[name] = old_group(kind, skipped, rng)
    groups["residual-n1"].pop("diagnostics")
    groups["residual-n1"]["per_layer"] = {"identity_distance": [0.0] * LAYERS, "negative_mass": [0.0] * LAYERS}
    names = list(groups)
    pairs = [{"a": a, "b": b, "mdd_80": None} for i, a in enumerate(names) for b in names[i + 1 :]]
    summary = {
        "study": {"methods": ["residual", "shc", "mhc", "hc"], "streams": [N], "axes": []},
        "axes": [],
        "groups": groups,
        "paired_differences": pairs,
        "multiple_comparisons": {"method": "holm", "pairs": 6},
    }
    return summary, truths


def test_layer_averages_leave_the_skipped_connections_out():
    summary, truths = old_summary(np.random.default_rng(0))
    out = restate(summary)
    for group in ("shc-n4", "mhc-n4"):
        mean = out["groups"][group]["diagnostics"]["mean"]
        for key, truth in truths[group].items():
            assert mean[key] == pytest.approx(truth, rel=1e-12), (group, key)
        assert mean["identity_distance"] != pytest.approx(
            summary["groups"][group]["diagnostics"]["mean"]["identity_distance"]
        )
        # the skipped entries of the per-layer curves are gaps now, the others as stored
        per_layer = out["groups"][group]["per_layer"]["identity_distance"]
        stored = summary["groups"][group]["per_layer"]["identity_distance"]
        skipped = out["groups"][group]["skipped_layers"]
        assert all(math.isnan(per_layer[i]) for i in skipped)
        assert [v for i, v in enumerate(per_layer) if i not in skipped] == [
            v for i, v in enumerate(stored) if i not in skipped
        ]
        assert out["groups"][group]["diagnostics"]["worst"] == summary["groups"][group]["diagnostics"]["worst"]
    assert out["groups"]["shc-n4"]["skipped_layers"] == [0, LAYERS - 1]
    assert out["groups"]["mhc-n4"]["skipped_layers"] == [LAYERS - 1]
    assert out["groups"]["hc-n4"]["diagnostics"] == summary["groups"]["hc-n4"]["diagnostics"]  # nothing skipped
    assert "skipped_layers" not in out["groups"]["residual-n1"]
    assert out["groups"]["shc-n4"]["kind"] == "shc" and out["study"]["kinds"] == summary["study"]["methods"]
    assert restate(out) == out  # restating twice changes nothing
    assert summary["groups"]["shc-n4"]["per_layer"]["identity_distance"][0] == 0.0  # the input is not modified


def test_restating_refuses_data_that_do_not_support_it():
    summary, _ = old_summary(np.random.default_rng(1))
    summary["groups"]["shc-n4"]["diagnostics"]["mean"]["identity_distance"] += 0.01
    with pytest.raises(ValueError, match="shc-n4: the layer average of identity_distance"):
        restate_structure(summary)
    summary, _ = old_summary(np.random.default_rng(1))
    summary["groups"]["shc-n4"]["diagnostics"]["worst"]["spectral_norm"] = identity_values(N)["spectral_norm"]
    with pytest.raises(ValueError, match="spectral norm could be the worst"):
        restate_structure(summary)


def test_pairs_are_recomputed_with_todays_statistics():
    summary, _ = old_summary(np.random.default_rng(2))
    out = restate(summary)
    for pair in out["paired_differences"]:
        a, b = (out["groups"][g]["val_loss_by_seed"] for g in (pair["a"], pair["b"]))
        d = [a[s] - b[s] for s in a]
        assert pair["mean"] == pytest.approx(np.mean(d)) and pair["mdd_80"] == pytest.approx(
            mdd(float(np.std(d, ddof=1)), 3)
        )
        assert pair["in_family"] and pair["verdict"]
    assert out["multiple_comparisons"]["family"] == "every pair"


def lr_groups() -> dict:
    """study-lr's shape: residual and mhc at two learning-rate scales, and a kind without the axis."""

    def group(kind, losses, axes):
        return {
            "kind": kind,
            "axes": axes,
            "val_loss": {"mean": float(np.mean(losses))},
            "val_loss_by_seed": {str(s): v for s, v in enumerate(losses)},
            "tokens_per_s": 100.0 * len(kind),
        }

    return {
        "residual-n1-lrx0.5": group("residual", [3.0, 3.1], {"lrx": 0.5}),
        "residual-n1-lrx2": group("residual", [3.5, 3.7], {"lrx": 2}),
        "mhc-n4-lrx0.5": group("mhc", [2.9, 3.0], {"lrx": 0.5}),
        "mhc-n4-lrx2": group("mhc", [3.6, 3.5], {"lrx": 2}),
        "shc-n4": group("shc", [3.2, 3.3], {}),
    }


def test_delta_vs_residual_is_against_the_residual_of_the_same_axis_values():
    groups = lr_groups()
    low, high = "residual-n1-lrx0.5", "residual-n1-lrx2"
    expected = {low: low, high: high, "mhc-n4-lrx0.5": low, "mhc-n4-lrx2": high, "shc-n4": None}
    assert matching_residual(groups) == expected
    versus_residual(groups)
    for rate in ("0.5", "2"):
        own, base = groups[f"mhc-n4-lrx{rate}"], groups[f"residual-n1-lrx{rate}"]
        assert own["val_loss_diff_to_residual"] == pytest.approx(own["val_loss"]["mean"] - base["val_loss"]["mean"])
        assert own["overhead_pct_vs_residual"] == pytest.approx(100 * (base["tokens_per_s"] / own["tokens_per_s"] - 1))
        # and it is the mean of the same-rate paired differences
        (pair,) = paired_differences(groups, [(f"mhc-n4-lrx{rate}", f"residual-n1-lrx{rate}")], None)
        assert own["val_loss_diff_to_residual"] == pytest.approx(pair["mean"])
    assert groups["mhc-n4-lrx2"]["val_loss_diff_to_residual"] < 0  # against the 0.5x residual it would be > 0
    assert groups["shc-n4"]["val_loss_diff_to_residual"] is None and groups["shc-n4"]["residual_group"] is None
    # a residual without axes (the axis applies to other kinds only) matches every group
    single = {g: e for g, e in lr_groups().items() if g != "residual-n1-lrx2"}
    single["residual-n1-lrx0.5"]["axes"] = {}
    assert set(matching_residual(single).values()) == {"residual-n1-lrx0.5"}


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "docs/results")))
def test_committed_summaries_are_restated(folder):
    summary = json.loads((folder / "summary.json").read_text())
    assert restate(summary) == json.loads(json.dumps(restate(summary)))  # JSON-able
    assert json.dumps(restate(summary), sort_keys=True) == json.dumps(summary, sort_keys=True), (
        f"{folder}: run scripts/restate_summaries.py"
    )
    for group, entry in summary["groups"].items():
        if entry["kind"] == "residual" or "per_layer" not in entry:
            continue
        assert skipped_layers(entry) == []  # no skipped layer is counted as the identity any more
        finite = [v for v in entry["per_layer"]["identity_distance"] if not math.isnan(v)]
        if not finite:  # a kind that computes no H_res (identity): no H_res statistics at all
            assert "identity_distance" not in entry["diagnostics"]["mean"]
            continue
        assert entry["diagnostics"]["mean"]["identity_distance"] == pytest.approx(float(np.mean(finite)), rel=1e-9), (
            group
        )
    assert "(1 seed)" not in report_markdown(summary, [])  # every committed group has several seeds


def test_one_seed_shows_no_spread():
    from hyperconn.analysis.render import mean_sd_text

    assert mean_sd_text({"mean": 1.5, "std": 0.0, "n": 1, "values": [1.5]}) == "1.5000 (1 seed)"
    assert mean_sd_text({"mean": 1.5, "std": 0.25, "n": 2, "values": [1.25, 1.75]}) == "1.5000 ± 0.2500"


def test_the_recorded_command_gets_the_pre_specified_family():
    summary, _ = old_summary(np.random.default_rng(3))
    summary["command"] = "hyperconn compare --kinds shc,mhc --bench-rounds 0"
    summary["multiple_comparisons"]["family"] = ["shc-n4:mhc-n4"]
    for pair in summary["paired_differences"]:
        pair["in_family"] = {pair["a"], pair["b"]} == {"shc-n4", "mhc-n4"}
    out = restate(summary)
    assert out["command"] == summary["command"] + " --pairs shc-n4:mhc-n4"
    assert restate(out)["command"] == out["command"]  # once
    assert [p["p_holm"] is not None for p in out["paired_differences"]] == [
        p["in_family"] for p in summary["paired_differences"]]


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: str(p.relative_to(ROOT / "docs/results")))
def test_committed_commands_rebuild_the_family(folder):
    """A committed report's command line parses back to a study with the summary's Holm family."""
    import argparse
    import shlex
    import warnings

    from hyperconn.analysis.commands import register, study_from_args

    summary = json.loads((folder / "summary.json").read_text())
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the a03ecd0 studies' --methods / --streams
        study = study_from_args(parser.parse_args(shlex.split(summary["command"])[1:]))
    family = summary["multiple_comparisons"]["family"]
    asked = [f"{a}:{b}" for a, b in study.pairs]
    assert asked == ([] if family == "every pair" else family)


def test_a_summary_written_today_comes_back_unchanged():
    summary, _ = old_summary(np.random.default_rng(4))
    today = restate(summary)
    today.pop("restated")  # as summarise writes it: nothing to restate
    assert restate(today) == today and "restated" not in restate(today)
