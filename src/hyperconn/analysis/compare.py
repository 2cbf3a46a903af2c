"""``compare``: train every run of a study, analyse each, write one report; a one-way pipeline

    study.plan (configs, validated)  ->  jobs (train / reuse, analyse, probes; files on disk)
        ->  summarise (statistics from those files)  ->  render (report.md, plots)

Layout of ``out``::

    out/study.json                       the study as asked (re-render with --report-only)
    out/<group>-s<seed>/                 one run per kind x num_streams x axis values x seed (the
                                         trainer's layout, plus analysis.json/.md and plots)
    out/throughput.json, out/memory.json the probes, per group
    out/summary.json, out/report.md, out/*.png

Finished runs are reused and interrupted ones resumed, but only if their resolved config equals
what this invocation asks for (:mod:`.study`); otherwise the whole comparison is refused before
anything trains, naming the differing keys. Runs of different commits are refused the same way
(:func:`.commits.check_commits`: the runs already present must share one commit, and when this
invocation trains or probes, the commit of this code) unless ``allow_mixed_commits``. An interim
report is written now and then, so a long comparison always shows what exists. ``report_only``
re-renders from the runs on disk and trains nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..fileio import write_json
from .analyze import DEFAULT_BATCHES
from .axes import yaml_scalar
from .commits import check_commits, current_commit
from .jobs import check_reuse, run_jobs, run_probes
from .report import fmt, md_table
from .study import CompareConfig, plan
from .summarise import summarise

INTERIM_REPORT_S = 120.0
STUDY_FILE = "study.json"


def compare_command(cfg: CompareConfig) -> str:
    parts = [
        "hyperconn compare", f"--preset {cfg.preset}", f"--kinds {','.join(cfg.kinds)}",
        f"--num-streams {','.join(map(str, cfg.num_streams))}", f"--seeds {cfg.seeds}", f"--out {cfg.out}",
    ]  # fmt: skip
    if cfg.steps is not None:
        parts.append(f"--steps {cfg.steps}")
    parts += [f"--set {o}" for o in cfg.overrides]
    for axis in cfg.axes:
        scope = f"{','.join(axis.kinds)}:" if axis.kinds else ""
        parts.append(f"--axis {scope}{axis.key}={','.join(yaml_scalar(v) for v in axis.values)}")
    if cfg.analyze_batches != DEFAULT_BATCHES:
        parts.append(f"--batches {cfg.analyze_batches}")
    parts.append(f"--bench-rounds {cfg.bench_rounds}")
    if cfg.pairs:  # the pre-specified Holm family
        parts.append(f"--pairs {','.join(f'{a}:{b}' for a, b in cfg.pairs)}")
    return " ".join(parts)


def write_report(cfg: CompareConfig, jobs, wall_s: float) -> dict:
    """Summarise what exists under ``cfg.out`` and render it; returns the summary (also summary.json)."""
    from .render import render

    summary = summarise(cfg, jobs, wall_s, compare_command(cfg))
    write_json(cfg.out / "summary.json", summary, indent=2)
    render(summary, cfg.out)
    return summary


def load_study(out: str | Path) -> CompareConfig:
    """The study a comparison in ``out`` was run with (its ``study.json``)."""
    path = Path(out) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STUDY_FILE} in {out}: give the study's flags (or --study) with --report-only")
    cfg = CompareConfig.from_dict(json.loads(path.read_text()))
    cfg.out = Path(out)
    return cfg.validate()


def run_compare(
    cfg: CompareConfig, log: Callable[[str], None] = print, report_only: bool = False, allow_mixed_commits: bool = False
) -> dict:
    """Train, analyse, probe and report the study (or with ``report_only`` only re-render it).

    Refused before anything trains: runs whose config differs from the study's
    (:class:`.jobs.RunMismatchError`), and unless ``allow_mixed_commits`` runs of different commits,
    or (when not ``report_only``) of another commit than this code (:class:`.commits.MixedCommitsError`).
    """
    jobs = plan(cfg)
    started = time.time()
    run_dirs = [job.run_dir for job in jobs]
    if report_only:
        check_reuse(jobs)
        check_commits(run_dirs, None, allow_mixed_commits)
        summary = write_report(cfg, jobs, wall_s=time.time() - started)
        log(f"[compare] report re-rendered from the runs on disk: {cfg.out / 'report.md'}")
        return summary
    check_reuse(jobs)
    check_commits(run_dirs, current_commit(), allow_mixed_commits)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / STUDY_FILE, cfg.to_dict(), indent=2)
    last = [time.time()]

    def interim() -> None:
        if time.time() - last[0] > INTERIM_REPORT_S:
            write_report(cfg, jobs, wall_s=time.time() - started)  # after a run: at least one exists
            last[0] = time.time()

    run_jobs(jobs, cfg.analyze_batches, log=log, after_each=interim)
    run_probes(cfg.out, jobs, cfg.bench_rounds, log=log)
    summary = write_report(cfg, jobs, wall_s=time.time() - started)
    log(f"[compare] report: {cfg.out / 'report.md'} ({time.time() - started:.0f} s)")
    return summary


def summary_table(summary: dict) -> str:
    """The headline table: group, val loss mean ± std, overhead %, identity distance, negative mass."""
    from .render import display_names, mean_sd_text

    names = display_names(summary)
    rows = []
    for group, e in summary["groups"].items():
        d = e.get("diagnostics", {}).get("mean", {})
        oh = e["overhead_pct_vs_residual"]
        rows.append([
            names[group], mean_sd_text(e["val_loss"]),
            "-" if oh is None else f"{oh:+.1f}%",
            fmt(d.get("identity_distance")), fmt(d.get("negative_mass")),
        ])  # fmt: skip
    return md_table(["group", "val loss (mean ± std)", "overhead vs residual", "‖H−I‖_F", "neg mass"], rows)
