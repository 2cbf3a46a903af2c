"""The summary and report of hand-built run directories: unfinished runs left out, DONE's final
numbers, stability, commits and the mixed-commit refusal, Holm-adjusted pairs, honest boilerplate."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from hyperconn.analysis import compare
from hyperconn.analysis.commits import MixedCommitsError, check_commits, provenance_summary, run_commits
from hyperconn.analysis.compare import run_compare
from hyperconn.analysis.render import report_markdown
from hyperconn.analysis.stats import holm
from hyperconn.analysis.study import CompareConfig, plan
from hyperconn.analysis.summarise import summarise
from hyperconn.cli import main

STEPS = 4
# final validation loss by (method, seed); mhc ends 0.3 lower than residual, shc about as residual
FINAL = {("residual", s): 3.0 + 0.01 * s for s in range(4)}
FINAL |= {("mhc", s): 2.7 + 0.01 * s + (0.002, -0.001, 0.001, -0.002)[s] for s in range(4)}
FINAL |= {("shc", s): 3.0 + (0.05, -0.04, 0.03, -0.06)[s] for s in range(4)}


def study(root, kinds=("residual", "mhc"), seeds=4) -> CompareConfig:
    return CompareConfig(preset="demo", kinds=kinds, num_streams=2, seeds=seeds, out=root / "out", steps=STEPS,
                         overrides=("train.warmup_steps=1",), bench_rounds=0).validate()  # fmt: skip


def stability(seed: int) -> dict:
    return {"after_step": 1, "steps": STEPS - 1, "grad_norm_max": 2.0 + seed, "grad_norm_p99": 1.0 + 0.5 * seed,
            "p99_definition": "nearest rank", "loss_spikes": seed % 2, "spike_steps": [],
            "spike_definition": "a spike"}  # fmt: skip


def write_run(job, done_step: int | None = STEPS, done_extra: dict | None = None, provenance: dict | None = None,
              logged_final: float | None = None, reached: int = STEPS) -> None:  # fmt: skip
    """A run directory as the trainer leaves it: config.yaml, metrics.csv (train rows 1..reached, eval
    rows every 2 steps, the last one at ``logged_final``), DONE, provenance.json."""
    method, seed = job.spec.kind, job.spec.seed
    final = FINAL[(method, seed)]
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "config.yaml").write_text(job.config.to_yaml())
    lines = ["step,loss,tokens,tokens_per_s,grad_norm,val_loss,val_bpb"]
    for step in range(1, reached + 1):
        lines.append(f"{step},{final + 1.0 / step + 0.01 * seed},{step * 64},{1000 + seed},{0.5 + step},,")
        if step % 2 == 0:
            val = logged_final if (logged_final is not None and step == reached) else final + 0.5 / step
            lines.append(f"{step},,,,,{val},{val / math.log(2)}")
    (job.run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if done_step is not None:
        done = {"step": done_step, "val_loss": final, "val_bpb": final / math.log(2), **(done_extra or {})}
        (job.run_dir / "DONE").write_text(json.dumps(done) + "\n")
    if provenance is not None:
        (job.run_dir / "provenance.json").write_text(json.dumps(provenance))


def prov(commit: str | None, dirty: bool = False, resumes: tuple = ()) -> dict:
    return {"commit": commit, "dirty": dirty, "describe": "x", "packages": {}, "python": "3", "machine": {},
            "time": "t", "compile": "blocks", "resumes": [{"commit": c, "dirty": d} for c, d in resumes]}  # fmt: skip


@pytest.fixture
def finished(tmp_path):
    """residual and mhc x 4 seeds, all finished from DONE with the full-split numbers and stability;
    residual-s1 never wrote DONE, mhc-s3 stopped at step 2 (a DONE of a shorter schedule)."""
    cfg = study(tmp_path)
    jobs = plan(cfg)
    for job in jobs:
        name, seed = job.spec.name, job.spec.seed
        extra = {"val_tokens": 1000, "stability": stability(seed)}
        if name == "residual-n1-s1":
            write_run(job, done_step=None, reached=3, provenance=prov("abc"))
        elif name == "mhc-n2-s3":
            write_run(job, done_step=2, reached=2, done_extra=extra, provenance=prov("abc"))
        else:
            write_run(job, done_extra=extra, provenance=prov("abc", dirty=seed == 2), logged_final=9.0)
    return cfg, jobs


def test_unfinished_runs_are_listed_and_left_out_everywhere(finished):
    cfg, jobs = finished
    summary = summarise(cfg, jobs, 0.0, "cmd")
    assert summary["unfinished"] == [{"name": "residual-n1-s1", "step": 3, "steps": STEPS},
                                     {"name": "mhc-n2-s3", "step": 2, "steps": STEPS}]  # fmt: skip
    residual, mhc = summary["groups"]["residual-n1"], summary["groups"]["mhc-n2"]
    assert residual["seeds"] == [0, 2, 3] and mhc["seeds"] == [0, 1, 2]
    assert "residual-n1-s1" not in summary["train_tokens"] and "mhc-n2-s3" not in summary["provenance"]["by_run"]
    (pair,) = summary["paired_differences"]
    assert pair["seeds"] == [0, 2] and pair["n"] == 2
    # curves over the finished seeds only, with the sample sd (n - 1) of the tables
    losses = [[FINAL[("residual", s)] + 1.0 / step + 0.01 * s for s in (0, 2, 3)] for step in range(1, STEPS + 1)]
    curve = residual["curves"]["train_loss"]
    assert curve["mean"] == pytest.approx([statistics.mean(v) for v in losses])
    assert curve["std"] == pytest.approx([statistics.stdev(v) for v in losses])
    report = report_markdown(summary, [])
    top = report.index("UNFINISHED: 2 run(s)")
    assert top < report.index("- command:") < report.index("## Validation loss")
    assert "`residual-n1-s1` (step 3 of 4), `mhc-n2-s3` (step 2 of 4)" in report
    assert "residual-n1-s1" not in report[report.index("- command:") :]


def test_final_numbers_are_the_full_split_evaluation_of_done(finished):
    cfg, jobs = finished
    summary = summarise(cfg, jobs, 0.0, "cmd")
    mhc = summary["groups"]["mhc-n2"]
    # the last logged evaluation says 9.0: DONE's whole-split numbers win
    assert mhc["val_loss_by_seed"] == {str(s): pytest.approx(FINAL[("mhc", s)]) for s in (0, 1, 2)}
    assert mhc["val_loss"]["mean"] == pytest.approx(statistics.mean(FINAL[("mhc", s)] for s in (0, 1, 2)))
    assert mhc["val_bpb"]["values"] == pytest.approx([FINAL[("mhc", s)] / math.log(2) for s in (0, 1, 2)])
    assert mhc["val_tokens"] == {"0": 1000, "1": 1000, "2": 1000} and mhc["final_step"] == STEPS
    assert "Final numbers: each run's final evaluation over the whole held-out split (1,000 tokens)" in (
        report_markdown(summary, []))


def test_older_runs_fall_back_to_the_last_logged_evaluation(tmp_path):
    cfg = study(tmp_path, seeds=2)
    jobs = plan(cfg)
    for job in jobs:  # a DONE written before it held the final numbers: only the step
        write_run(job, done_step=None)
        (job.run_dir / "DONE").write_text(json.dumps({"step": STEPS}) + "\n")
    summary = summarise(cfg, jobs, 0.0, "cmd")
    residual = summary["groups"]["residual-n1"]
    assert residual["val_loss_by_seed"] == {str(s): pytest.approx(FINAL[("residual", s)] + 0.5 / STEPS)
                                            for s in (0, 1)}  # fmt: skip
    assert residual["val_tokens"] == {"0": None, "1": None} and residual["stability"] is None
    assert sorted(summary["provenance"]["unknown"]) == sorted(job.spec.name for job in jobs)
    report = report_markdown(summary, [])
    assert "the last logged evaluation (`train.eval_batches` batches)" in report
    assert "Logged rows only" in report and "code: no run records its commit" in report


def test_stability_over_seeds(finished):
    cfg, jobs = finished
    summary = summarise(cfg, jobs, 0.0, "cmd")
    st = summary["groups"]["residual-n1"]["stability"]
    assert st["seeds"] == [0, 2, 3] and st["missing_seeds"] == []
    assert st["grad_norm_max"] == {"mean": pytest.approx(11 / 3), "max": 5.0, "by_seed": {"0": 2.0, "2": 4.0,
                                                                                          "3": 5.0}}  # fmt: skip
    assert st["grad_norm_p99"]["mean"] == pytest.approx((1.0 + 2.0 + 2.5) / 3) and st["grad_norm_p99"]["max"] == 2.5
    assert st["loss_spikes"] == {"total": 1, "by_seed": {"0": 0, "2": 0, "3": 1}}
    assert st["spike_definition"] == "a spike" and st["p99_definition"] == "nearest rank"
    assert summary["groups"]["residual-n1"]["stability_logged_rows"]["max_grad_norm"] == 0.5 + STEPS
    report = report_markdown(summary, [])
    section = report[report.index("## Stability") :]
    assert "Spike definition: a spike. p99: nearest rank." in section
    assert "| residual | 3 | 3.667 / 5.000 | 1.833 / 2.500 | 1 | - |" in section
    assert "Logged rows only" not in section


def test_provenance_summary_and_report_line(tmp_path):
    dirs = {}
    # e: git status failed when its resume started (dirty None): unknown, not clean
    for name, p in (("a", prov("c1")), ("b", prov("c1", resumes=(("c2", True),))), ("c", None), ("d", prov(None)),
                    ("e", prov("c1", resumes=(("c1", None),)))):  # fmt: skip
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        if p is not None:
            (dirs[name] / "provenance.json").write_text(json.dumps(p))
    got = provenance_summary(dirs)
    assert got == {"commits": ["c1", "c2"], "dirty": True, "by_run": {"a": "c1", "b": "c1", "c": "unknown",
                   "d": "unknown", "e": "c1"}, "resumed_on": {"b": ["c2"], "e": ["c1"]}, "unknown": ["c", "d"],
                   "dirty_by_run": {"a": [False], "b": [False, True], "c": [None], "d": [False], "e": [False, None]},
                   "dirty_unknown": ["c", "e"], "compile": ["blocks"],
                   "compile_by_run": {"a": ["blocks"], "b": ["blocks", None], "c": [None], "d": ["blocks"],
                                      "e": ["blocks", None]}}  # fmt: skip
    assert run_commits(None) == ["unknown"] and run_commits(prov("x", resumes=(("y", False),))) == ["x", "y"]
    from hyperconn.analysis.evidence import provenance_line

    line = provenance_line(got)
    assert line.startswith("MIXED commits `c1`, `c2` (with uncommitted changes")
    assert "commit unknown for c, d" in line and "resumed: b on c2" in line
    assert "uncommitted changes is unknown for e;" in line and "compile: blocks (not recorded for b, c, e)" in line
    assert provenance_line(provenance_summary({"a": dirs["a"]})) == "commit `c1`; compile: blocks"
    # only unknown: the line says so, and the summary does not call it clean
    alone = provenance_summary({"e": dirs["e"]})
    assert not alone["dirty"] and alone["dirty_unknown"] == ["e"]
    assert "unknown for e" in provenance_line(alone)


def test_mixed_commits_are_refused_in_one_line(tmp_path):
    dirs = []
    for name, p in (("r-s0", prov("c1")), ("r-s1", prov("c1")), ("m-s0", prov("c2")), ("m-s1", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("x: 1\n")
        if p is not None:
            (tmp_path / name / "provenance.json").write_text(json.dumps(p))
        dirs.append(tmp_path / name)
    check_commits(dirs[:2], None)
    check_commits(dirs[:2], "c1")
    check_commits([*dirs[:2], tmp_path / "not-yet-trained"], "c1")  # a run directory not written yet
    with pytest.raises(MixedCommitsError) as err:
        check_commits(dirs[:3], None)
    message = str(err.value)
    assert "\n" not in message and "c1, c2" in message and "m-s0: c2" in message and "r-s0: c1" in message
    assert "--allow-mixed-commits" in message
    with pytest.raises(MixedCommitsError, match="this code: c3"):
        check_commits(dirs[:2], "c3")
    with pytest.raises(MixedCommitsError, match="m-s1: unknown"):
        check_commits([dirs[0], dirs[3]], None)  # unknown mixed with known
    with pytest.raises(MixedCommitsError, match=r"\(c1, unknown\)"):
        check_commits(dirs[:2], "unknown")
    check_commits(dirs, "c9", allow_mixed=True)


@pytest.mark.slow
def test_compare_refuses_mixed_commits_unless_allowed(tmp_path, capsys):
    cfg = study(tmp_path, seeds=2)
    jobs = plan(cfg)
    for job in jobs:
        write_run(job, provenance=prov("c2" if job.spec.name == "mhc-n2-s1" else "c1"))
    with pytest.raises(MixedCommitsError, match="mhc-n2-s1: c2"):
        run_compare(cfg, log=lambda msg: None, report_only=True)
    assert not (cfg.out / "report.md").exists()
    flags = ["--preset", "demo", "--kinds", "residual,mhc", "--num-streams", "2", "--seeds", "2", "--steps", "4",
             "--set", "train.warmup_steps=1", "--out", str(cfg.out)]  # fmt: skip
    assert main(["compare", "--report-only", *flags]) == 2
    assert "refusing to mix runs of different commits" in capsys.readouterr().err
    assert main(["compare", "--report-only", "--allow-mixed-commits", *flags]) == 0
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary["provenance"]["commits"] == ["c1", "c2"]
    assert "MIXED commits `c1`, `c2`" in (cfg.out / "report.md").read_text()


def test_training_refuses_runs_of_another_commit(tmp_path, monkeypatch):
    cfg = study(tmp_path, seeds=1)
    for job in plan(cfg):
        write_run(job, provenance=prov("old"))
    monkeypatch.setattr(compare, "current_commit", lambda: "new")
    with pytest.raises(MixedCommitsError, match="this code: new"):
        run_compare(cfg, log=lambda msg: None)


def test_pairs_are_holm_adjusted_and_the_report_says_so(tmp_path):
    cfg = study(tmp_path, kinds=("residual", "mhc", "shc"))
    jobs = plan(cfg)
    for job in jobs:
        write_run(job, done_extra={"val_tokens": 10}, provenance=prov("abc"))
    summary = summarise(cfg, jobs, 0.0, "cmd")
    pairs = summary["paired_differences"]
    assert [(p["a"], p["b"]) for p in pairs] == [("residual-n1", "mhc-n2"), ("residual-n1", "shc-n2"),
                                                 ("mhc-n2", "shc-n2")]  # fmt: skip
    assert [p["p_holm"] for p in pairs] == pytest.approx(holm([p["p"] for p in pairs]))
    assert summary["multiple_comparisons"] == {"method": "holm", "pairs": 3, "family": "every pair"}
    assert all(p["in_family"] for p in pairs)
    for p in pairs:
        d = [FINAL[(p["a"].split("-")[0], s)] - FINAL[(p["b"].split("-")[0], s)] for s in range(4)]
        assert p["mean"] == pytest.approx(statistics.mean(d)) and p["sd"] == pytest.approx(statistics.stdev(d))
        assert p["resolved"] == (p["p_holm"] < 0.05)
    resolved, tie = pairs[0], pairs[1]
    assert resolved["resolved"] and resolved["verdict"] == "resolved"  # 0.3 apart, sd ~0.003
    bound = max(abs(tie["ci_low"]), abs(tie["ci_high"]))
    assert not tie["resolved"] and tie["verdict"] == f"not detected (the interval excludes differences larger than " \
        f"{bound:.4f})"  # fmt: skip
    report = report_markdown(summary, [])
    assert "Holm step-down over the 3 pair(s)" in report and "per-comparison alpha = 0.05" in report
    assert "| mdd_80 | verdict |" in report and tie["verdict"] in report
    assert "Resolved: residual − mhc = +0.3" in report


def test_a_pre_specified_family_is_corrected_alone_in_the_asked_orientation(tmp_path):
    cfg = study(tmp_path, kinds=("residual", "mhc", "shc"))
    cfg.pairs = ("shc-n2:residual-n1", "mhc-n2:shc-n2")
    cfg.validate()
    jobs = plan(cfg)
    for job in jobs:
        write_run(job, done_extra={"val_tokens": 10}, provenance=prov("abc"))
    summary = summarise(cfg, jobs, 0.0, "cmd")
    pairs = summary["paired_differences"]
    # the family first, as asked (shc - residual, not residual - shc), then the pair outside it
    assert [(p["a"], p["b"], p["in_family"]) for p in pairs] == [
        ("shc-n2", "residual-n1", True), ("mhc-n2", "shc-n2", True), ("residual-n1", "mhc-n2", False)]
    d = [FINAL[("shc", s)] - FINAL[("residual", s)] for s in range(4)]
    assert pairs[0]["mean"] == pytest.approx(statistics.mean(d))
    # Holm over the two family pairs only; the third keeps its uncorrected p and has no verdict
    assert [p["p_holm"] for p in pairs[:2]] == pytest.approx(holm([p["p"] for p in pairs[:2]]))
    outside = pairs[2]
    assert outside["p"] < 0.05 and outside["p_holm"] is None and not outside["resolved"]
    assert outside["verdict"] == "outside the family: uncorrected p, no verdict"
    assert summary["multiple_comparisons"] == {"method": "holm", "pairs": 2,
                                               "family": ["shc-n2:residual-n1", "mhc-n2:shc-n2"]}  # fmt: skip
    assert summary["study"]["pairs"] == ["shc-n2:residual-n1", "mhc-n2:shc-n2"]
    report = report_markdown(summary, [])
    assert "Holm step-down over the 2 pre-specified pair(s)" in report
    assert CompareConfig.from_dict(summary["study"]).validate().pairs == cfg.pairs  # study.json round trip


@pytest.mark.parametrize(("pairs", "message"), [
    (("mhc-n2:nope-n4",), "pairs: no group nope-n4 in this study; its groups: residual-n1, mhc-n2"),
    (("mhc-n2",), "pairs: each pair is A:B \\(two group names\\), got 'mhc-n2'"),
    (("mhc-n2:mhc-n2",), "pairs a group with itself or repeats a pair"),
    (("mhc-n2:residual-n1", "residual-n1:mhc-n2"), "pairs a group with itself or repeats a pair"),
])  # fmt: skip
def test_bad_pairs_are_refused_in_one_line(tmp_path, pairs, message):
    cfg = study(tmp_path)
    cfg.pairs = pairs
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_bad_pairs_flag_exits_2_before_training(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--preset", "demo", "--kinds", "residual,shc", "--num-streams", "2", "--out", str(out),
                 "--pairs", "shc-n2:mhc-n2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no group mhc-n2 in this study" in err[0]
    assert not out.exists()


def test_boilerplate_says_only_what_happened(finished):
    cfg, jobs = finished
    summary = summarise(cfg, jobs, 0.0, "cmd")
    assert summary["throughput_bench"] is None  # --bench-rounds 0, no throughput.json
    report = report_markdown(summary, [])
    assert "the side-by-side measurement was not run (`--bench-rounds 0`)" in report
    assert "0 rounds" not in report and "one after another" not in report
    assert "code: commit `abc` (with uncommitted changes in at least one run segment)" in report


def test_a_fresh_summary_needs_no_restating(finished):
    from hyperconn.analysis.restate import restate

    cfg, jobs = finished
    summary = json.loads(json.dumps(summarise(cfg, jobs, 0.0, "cmd")))  # as summary.json holds it
    assert summary["groups"]["mhc-n2"]["residual_group"] == "residual-n1"
    assert json.dumps(restate(summary), sort_keys=True) == json.dumps(summary, sort_keys=True)
