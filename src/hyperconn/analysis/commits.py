"""Which code trained a study's runs: each run's ``provenance.json`` reduced to commits, and the
refusal to put runs of different commits into one comparison.

A run's commits are the commit it was started on and the commit of every resume
(``provenance.json``: ``{"commit", "dirty", ..., "resumes": [{"commit", "dirty", ...}, ...]}``).
A run without ``provenance.json`` (trained before it was written), or whose provenance has no
commit (not trained from a git checkout), counts as commit :data:`UNKNOWN`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

UNKNOWN = "unknown"
PROVENANCE = "provenance.json"


class MixedCommitsError(ValueError):
    """The runs of a study were (or would be) trained by different commits."""


def read_run_provenance(run_dir: str | Path) -> dict | None:
    """The run's ``provenance.json`` (:func:`hyperconn.train.read_provenance`), or None when it has none."""
    from ..train import read_provenance

    data = read_provenance(run_dir)
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{Path(run_dir) / PROVENANCE} must hold a JSON object, got {type(data).__name__}")
    return data


def run_commits(provenance: Mapping | None) -> list[str]:
    """The commits a run was trained on, in order (start, then each resume); ``[UNKNOWN]`` without
    provenance."""
    if provenance is None:
        return [UNKNOWN]
    segments = [provenance, *(provenance.get("resumes") or [])]
    return [seg.get("commit") or UNKNOWN for seg in segments]


def run_segments(provenance: Mapping | None, key: str) -> list:
    """``key`` of each segment of a run (its start, then each resume), None where not recorded;
    ``[None]`` without provenance."""
    if provenance is None:
        return [None]
    return [seg.get(key) for seg in [provenance, *(provenance.get("resumes") or [])]]


def provenance_summary(run_dirs: Mapping[str, Path]) -> dict:
    """Over the runs ``name -> run_dir``: ``commits`` (the sorted distinct known commits, resumes
    included), ``by_run`` (each run's starting commit), ``resumed_on`` (the commits of each resumed
    run's resumes), ``unknown`` (the runs with a segment of no known commit); ``dirty`` (whether a
    segment ran from a checkout with uncommitted changes), ``dirty_by_run`` (each run's segments:
    True, False, or None where ``git status`` failed or nothing was recorded) and ``dirty_unknown``
    (the runs with such a segment: not counted as clean); ``compile_by_run`` (each segment's
    compile mode, :func:`hyperconn.train.provenance.compile_mode`, None where not recorded) and
    ``compile`` (the distinct recorded modes)."""
    commits: set[str] = set()
    by_run: dict[str, str] = {}
    resumed_on: dict[str, list[str]] = {}
    unknown: list[str] = []
    dirty_by_run: dict[str, list[bool | None]] = {}
    compile_by_run: dict[str, list[str | None]] = {}
    for name, run_dir in run_dirs.items():
        prov = read_run_provenance(run_dir)
        seq = run_commits(prov)
        by_run[name] = seq[0]
        if len(seq) > 1:
            resumed_on[name] = seq[1:]
        if UNKNOWN in seq:
            unknown.append(name)
        commits.update(c for c in seq if c != UNKNOWN)
        dirty_by_run[name] = [None if d is None else bool(d) for d in run_segments(prov, "dirty")]
        compile_by_run[name] = run_segments(prov, "compile")
    modes = {m for seq in compile_by_run.values() for m in seq if m is not None}
    return {"commits": sorted(commits), "by_run": by_run, "resumed_on": resumed_on, "unknown": unknown,
            "dirty": any(True in seq for seq in dirty_by_run.values()), "dirty_by_run": dirty_by_run,
            "dirty_unknown": [n for n, seq in dirty_by_run.items() if None in seq],
            "compile": sorted(modes), "compile_by_run": compile_by_run}  # fmt: skip


def current_commit() -> str:
    """The commit the trainer of this installation records in new runs
    (``hyperconn.train.provenance.collect``); :data:`UNKNOWN` where it records none."""
    try:
        from ..train.provenance import collect
    except ImportError:  # a trainer that writes no provenance: its runs are of unknown commit
        return UNKNOWN
    return collect().get("commit") or UNKNOWN


def check_commits(run_dirs: Sequence[Path], current: str | None, allow_mixed: bool = False) -> None:
    """Refuse a study whose existing runs were trained on different commits, or on another commit
    than ``current`` (the code about to train or resume runs; None when nothing will train).

    Only run directories that already hold a run (a ``config.yaml``) count. One
    :class:`MixedCommitsError` line names every run with its commits; ``allow_mixed`` skips the check.
    """
    if allow_mixed:
        return
    found = {Path(d).name: run_commits(read_run_provenance(d)) for d in run_dirs if (Path(d) / "config.yaml").exists()}
    seen = {c for seq in found.values() for c in seq}
    if current is not None and found:
        seen.add(current)
    if len(seen) <= 1:
        return
    runs = "; ".join(f"{name}: {', '.join(dict.fromkeys(seq))}" for name, seq in found.items())
    here = "" if current is None else f"; this code: {current}"
    raise MixedCommitsError(
        f"refusing to mix runs of different commits ({', '.join(sorted(seen))}) in one study: {runs}{here} "
        "(use another --out, or pass --allow-mixed-commits to combine them anyway)"
    )
