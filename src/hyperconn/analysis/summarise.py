"""Read a study's finished work from disk and reduce it to one summary (the statistics).

Input: the run directories (``DONE``, ``metrics.csv``, ``config.yaml``, ``analysis.json``,
``provenance.json``) and the probes' ``throughput.json`` / ``memory.json``. Output: one JSON-able
dict holding everything the report shows (:mod:`.render` reads nothing else): per group (a method
x streams x axis values) the final validation loss and bits per byte over seeds, their curves,
speed, memory, stability and diagnostics; per run its training tokens; the resolved data settings;
the commits that trained the runs; and the paired-by-seed differences of every pair of groups
(t-based 95% intervals, p-values, Holm adjustment, minimum detectable difference: :mod:`.stats`).

Only *finished* runs count: a run with ``DONE`` whose step is the config's ``train.steps``. Every
other run of the study is listed under ``unfinished`` (name and the step it reached) and left out of
every group, pair and curve. A finished run's final numbers are its ``DONE`` evaluation (over the
whole held-out split, ``val_tokens`` tokens, where ``DONE`` records them), else its last logged
evaluation (runs written before ``DONE`` held the full-split numbers).
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..connections import available_connections, connection_parameter_count
from .commits import provenance_summary
from .stats import ALPHA, CONFIDENCE, POWER, adjust_pairs, mean_std, paired_difference
from .study import CompareConfig, Job

SPIKE_WINDOW = 10
SPIKE_RATIO = 1.2
LOGGED_SPIKE_DEFINITION = (
    f"a loss spike is a logged training loss more than {SPIKE_RATIO:g}x the median of the "
    f"{SPIKE_WINDOW} logged losses before it (counted after the warm-up steps; logged rows only)"
)
PARAM_TABLE_STREAMS = tuple(range(2, 9))
SPLIT_KEYS = tuple(f"{split} {what}" for split in ("train", "val") for what in ("documents", "bytes", "tokens"))


def count_spikes(losses: Sequence[float]) -> int:
    count = 0
    for i in range(SPIKE_WINDOW, len(losses)):
        if losses[i] > SPIKE_RATIO * float(np.median(losses[i - SPIKE_WINDOW : i])):
            count += 1
    return count


@dataclass
class RunRecord:
    """What one finished run contributes."""

    job: Job
    final_step: int
    final_val_loss: float
    final_val_bpb: float
    val_tokens: int | None  # tokens of the final evaluation; None: the last logged evaluation's numbers
    train_steps: list[float]
    train_loss: list[float]
    train_tokens: int
    val_steps: list[float]
    val_loss: list[float]
    tokens_per_s: float
    peak_mem_mb: float
    logged_max_grad_norm: float
    logged_spikes: int
    stability: dict | None
    analysis: dict | None


def read_done(run_dir: Path) -> dict | None:
    """The run's ``DONE`` record (:func:`hyperconn.train.read_done`), or None when it is absent or
    unreadable (then the run counts as unfinished)."""
    from ..train import read_done as read

    try:
        done = read(run_dir)
    except ValueError:  # a torn or foreign DONE
        return None
    return done if isinstance(done, dict) and isinstance(done.get("step"), int) else None


def _rows(job: Job) -> list[dict]:
    from ..train import read_metrics

    if not (job.run_dir / "metrics.csv").exists():
        return []
    return [
        {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for row in read_metrics(job.run_dir)
    ]


def load_record(job: Job) -> RunRecord | dict:
    """The finished run's record, or ``{"name", "step", "steps"}`` (the step it reached of the
    config's ``train.steps``) for a run that has not finished."""
    rows = _rows(job)
    train_rows = [r for r in rows if "loss" in r and "step" in r]
    val_rows = [r for r in rows if "val_loss" in r and "step" in r]
    done, target = read_done(job.run_dir), job.config.train.steps
    if done is None or done["step"] < target or not train_rows:
        reached = done["step"] if done is not None else int(max((r["step"] for r in rows if "step" in r), default=0))
        return {"name": job.spec.name, "step": reached, "steps": target}
    if "val_loss" in done:
        final = (float(done["val_loss"]), float(done.get("val_bpb", math.nan)))
        val_tokens = int(done["val_tokens"]) if done.get("val_tokens") is not None else None
    elif val_rows:
        final, val_tokens = (val_rows[-1]["val_loss"], val_rows[-1].get("val_bpb", math.nan)), None
    else:
        return {"name": job.spec.name, "step": done["step"], "steps": target}  # no final evaluation anywhere
    warmup = job.config.train.warmup_steps
    speed = [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r and r["step"] > warmup]
    speed = speed or [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r]
    analysis_path = job.run_dir / "analysis.json"
    return RunRecord(
        job=job,
        final_step=int(done["step"]),
        final_val_loss=final[0],
        final_val_bpb=final[1],
        val_tokens=val_tokens,
        train_steps=[r["step"] for r in train_rows],
        train_loss=[r["loss"] for r in train_rows],
        train_tokens=int(max(r.get("tokens", 0.0) for r in train_rows)),
        val_steps=[r["step"] for r in val_rows],
        val_loss=[r["val_loss"] for r in val_rows],
        tokens_per_s=float(np.median(speed)) if speed else math.nan,
        peak_mem_mb=max((r.get("peak_mem_mb", math.nan) for r in train_rows), default=math.nan),
        logged_max_grad_norm=max((r.get("grad_norm", math.nan) for r in train_rows), default=math.nan),
        logged_spikes=count_spikes([r["loss"] for r in train_rows if r["step"] > warmup]),
        stability=done.get("stability") if isinstance(done.get("stability"), dict) else None,
        analysis=json.loads(analysis_path.read_text()) if analysis_path.exists() else None,
    )


def _curve(recs: list[RunRecord], steps: str, values: str) -> dict:
    """Mean and sample sd over seeds (as :func:`.stats.mean_std`: ``n - 1``, 0 for one seed) at the
    logged steps all seeds share (the shortest run's)."""
    length = min(len(getattr(r, values)) for r in recs)
    ys = np.array([getattr(r, values)[:length] for r in recs], dtype=float).reshape(len(recs), length)
    std = ys.std(0, ddof=1) if len(recs) > 1 else np.zeros(length)
    return {"step": getattr(recs[0], steps)[:length], "mean": ys.mean(0).tolist(), "std": std.tolist()}


def _stability(recs: list[RunRecord]) -> dict | None:
    """Over the seeds whose ``DONE`` records stability (every step after ``after_step``, not only
    the logged rows): grad-norm max and p99 (mean and max over seeds), loss spikes, the definitions."""
    have = [r for r in recs if r.stability is not None]
    if not have:
        return None

    def over_seeds(key: str) -> dict | None:
        """Mean and max over the seeds that have a value (None: no step after ``after_step``)."""
        by_seed = {str(r.job.spec.seed): float(r.stability[key]) for r in have if r.stability.get(key) is not None}
        if not by_seed:
            return None
        vals = list(by_seed.values())
        return {"mean": float(np.mean(vals)), "max": float(np.max(vals)), "by_seed": by_seed}

    spikes = {str(r.job.spec.seed): int(r.stability["loss_spikes"]) for r in have}
    definitions = sorted({str(r.stability.get("spike_definition", "")) for r in have})
    return {
        "seeds": [r.job.spec.seed for r in have],
        "missing_seeds": [r.job.spec.seed for r in recs if r.stability is None],
        "after_step": {str(r.job.spec.seed): r.stability.get("after_step") for r in have},
        "steps": {str(r.job.spec.seed): r.stability.get("steps") for r in have},
        "grad_norm_max": over_seeds("grad_norm_max"),
        "grad_norm_p99": over_seeds("grad_norm_p99"),
        "p99_definition": next((r.stability["p99_definition"] for r in have if r.stability.get("p99_definition")),
                               None),
        "loss_spikes": {"total": sum(spikes.values()), "by_seed": spikes},
        "spike_definition": definitions[0] if len(definitions) == 1 else definitions,
    }


def data_settings(rec: RunRecord) -> dict:
    """The resolved data settings of a run; the split's counts come from its analysis (as the token
    cache recorded them), absent for analyses written before they were recorded."""
    data = rec.job.config.data
    info = (rec.analysis or {}).get("info", {})
    out = {"source": data.source, "tokenizer": data.tokenizer, "val_fraction": data.val_fraction}
    if data.tokenizer == "bpe":
        out["bpe_vocab_size"] = data.bpe_vocab_size
    if "data source" in info:
        out["description"] = info["data source"]
    split = {k.replace(" ", "_"): info[k] for k in SPLIT_KEYS if info.get(k) is not None}
    if split:
        out["split"] = split
    return out


def _diagnostics(analyses: list[dict]) -> dict:
    summ = [a["summary"] for a in analyses]
    entry = {
        "params_total": analyses[0]["info"]["parameters (total)"],
        "params_connections": analyses[0]["info"]["parameters (connections)"],
        "diagnostics": {
            part: {k: float(np.mean([s[part][k] for s in summ])) for k in summ[0][part]}
            for part in ("mean", "worst", "composite")
        },
    }
    if "sinkhorn_error_curve" in summ[0]:
        entry["sinkhorn_error_curve"] = np.mean([s["sinkhorn_error_curve"] for s in summ], 0).tolist()
        entry["sinkhorn_iters"] = summ[0]["sinkhorn_iters"]
    # a connection without H_res (skipped as inert) has None: NaN in the per-layer curves
    per_layer = {
        key: np.mean([[math.nan if la["mean"][key] is None else la["mean"][key] for la in a["layers"]]
                      for a in analyses], 0).tolist()
        for key in ("identity_distance", "negative_mass")
    }
    for key, reduce in (("forward_gain_max", np.max), ("backward_gain_max", np.max), ("spectral_norm_mean", np.mean)):
        per_layer[f"composite_{key}"] = reduce([a["composite"][key] for a in analyses], 0).tolist()
    entry["per_layer"] = per_layer
    return entry


def parameter_table(dim: int) -> dict[str, dict[str, int | None]]:
    """Learnable parameters of ONE connection of width ``dim`` for n = 1..8 (None = refused), and
    n = 9 for mhc_lite (its refusal beyond 8)."""
    table: dict[str, dict[str, int | None]] = {}
    for kind in available_connections():
        ns = (1, *PARAM_TABLE_STREAMS, 9) if kind == "mhc_lite" else (1, *PARAM_TABLE_STREAMS)
        row: dict[str, int | None] = {}
        for n in ns:
            try:
                row[str(n)] = connection_parameter_count(kind, n, dim)
            except ValueError:
                row[str(n)] = None
        table[kind] = row
    return table


def machine_description() -> str:
    return (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _kind(entry: dict) -> str:
    """A group's kind (``method`` in summaries written before the rename)."""
    return entry["kind"] if "kind" in entry else entry["method"]


def matching_residual(groups: dict[str, dict]) -> dict[str, str | None]:
    """Each group's residual: the one residual group whose axis values all equal the group's
    (study-lr: ``mhc-n4-lrx2`` -> ``residual-n1-lrx2``; a residual group without axes matches every
    group). None where no residual group, or more than one, matches."""
    residuals = {g: e for g, e in groups.items() if _kind(e) == "residual"}
    out: dict[str, str | None] = {}
    for group, entry in groups.items():
        axes = entry.get("axes") or {}
        matches = [r for r, e in residuals.items() if all(axes.get(k) == v for k, v in (e.get("axes") or {}).items())]
        out[group] = matches[0] if len(matches) == 1 else None
    return out


def versus_residual(groups: dict[str, dict]) -> None:
    """Set each group's ``residual_group`` (:func:`matching_residual`), ``val_loss_diff_to_residual``
    (difference of the mean final losses) and ``overhead_pct_vs_residual`` (``tokens/s(residual) /
    tokens/s(group) - 1``, from the interleaved probe), in place; None without a matching residual."""
    for group, residual in matching_residual(groups).items():
        entry = groups[group]
        base = None if residual is None else groups[residual]
        entry["residual_group"] = residual
        diff = None if base is None else entry["val_loss"]["mean"] - base["val_loss"]["mean"]
        entry["val_loss_diff_to_residual"] = diff
        own, theirs = entry.get("tokens_per_s"), None if base is None else base.get("tokens_per_s")
        entry["overhead_pct_vs_residual"] = None if not (own and theirs) else 100 * (theirs / own - 1)


def paired_differences(groups: dict[str, dict], pairs: Sequence[tuple[str, str]],
                       family: Sequence[bool] | None) -> list[dict]:
    """The paired-by-seed difference of every pair ``(a, b)`` of groups (final validation loss,
    :func:`.stats.paired_difference`), Holm-adjusted over ``family`` (None: every pair)."""
    out = []
    for a, b in pairs:
        by_seed = {g: {int(s): v for s, v in groups[g]["val_loss_by_seed"].items()} for g in (a, b)}
        out.append({"a": a, "b": b, **paired_difference(by_seed[a], by_seed[b])})
    return adjust_pairs(out, ALPHA, family)


def summarise(cfg: CompareConfig, jobs: Sequence[Job], wall_s: float, command: str) -> dict:
    """The summary of everything under ``cfg.out`` that belongs to this study (module docstring)."""
    records: dict[str, list[RunRecord]] = {}
    unfinished: list[dict] = []
    for job in jobs:
        rec = load_record(job)
        if isinstance(rec, RunRecord):
            records.setdefault(job.spec.group, []).append(rec)
        else:
            unfinished.append(rec)
    if not records:
        listed = ", ".join(f"{u['name']} (step {u['step']} of {u['steps']})" for u in unfinished)
        raise FileNotFoundError(f"no finished runs of this study under {cfg.out}; unfinished: {listed}")
    bench = _read_json(cfg.out / "throughput.json") or {}
    memory = (_read_json(cfg.out / "memory.json") or {}).get("groups", {})
    speed = {g: e["tokens_per_s"] for g, e in bench.get("groups", {}).items()}
    order = list(dict.fromkeys(job.spec.group for job in jobs if job.spec.group in records))
    groups: dict[str, dict] = {}
    for group in order:
        recs = records[group]
        spec = recs[0].job.spec
        vl = mean_std([r.final_val_loss for r in recs])
        entry = {
            "kind": spec.kind,
            "num_streams": spec.num_streams,
            "axes": spec.axis_values,
            "seeds": [r.job.spec.seed for r in recs],
            "final_step": int(min(r.final_step for r in recs)),
            "val_loss": vl,
            "val_loss_by_seed": {str(r.job.spec.seed): r.final_val_loss for r in recs},
            "val_bpb": mean_std([r.final_val_bpb for r in recs]),
            "val_tokens": {str(r.job.spec.seed): r.val_tokens for r in recs},
            "train_tokens": {str(r.job.spec.seed): r.train_tokens for r in recs},
            "tokens_per_s": speed.get(group),
            "tokens_per_s_training_log": float(np.mean([r.tokens_per_s for r in recs])),
            "peak_mem_mb_training_log": float(np.max([r.peak_mem_mb for r in recs])),
            "memory": memory.get(group),
            "stability": _stability(recs),
            "stability_logged_rows": {"max_grad_norm": float(np.max([r.logged_max_grad_norm for r in recs])),
                                      "loss_spikes": int(sum(r.logged_spikes for r in recs))},
            "data": data_settings(recs[0]),
            "curves": {"train_loss": _curve(recs, "train_steps", "train_loss"),
                       "val_loss": _curve(recs, "val_steps", "val_loss")},
        }  # fmt: skip
        analyses = [r.analysis for r in recs if r.analysis is not None]
        if analyses:
            entry.update(_diagnostics(analyses))
        groups[group] = entry
    versus_residual(groups)
    # every pair of groups; the asked pairs (cfg.pairs, the Holm family) in the asked orientation
    # and order, first, then the rest
    asked = {frozenset(p): rank for rank, p in enumerate(cfg.pairs)}
    ranked = []  # (rank in cfg.pairs, or len(asked) outside the family; the pair)
    for i, first_group in enumerate(order):
        for second_group in order[i + 1 :]:
            rank = asked.get(frozenset((first_group, second_group)), len(asked))
            a, b = cfg.pairs[rank] if rank < len(asked) else (first_group, second_group)
            ranked.append((rank, (a, b)))
    ranked.sort(key=lambda e: e[0])  # the family in the asked order, then the rest in report order (stable)
    family = [rank < len(asked) for rank, _ in ranked] if asked else None
    pairs = paired_differences(groups, [pair for _, pair in ranked], family)
    data_all = [json.dumps(e["data"], sort_keys=True) for e in groups.values()]
    first = records[order[0]][0].job.config
    finished = {r.job.spec.name: r.job.run_dir for recs in records.values() for r in recs}
    return {
        "study": cfg.to_dict(),
        "command": command,
        "preset": cfg.preset,
        "machine": machine_description(),
        "wall_s_this_invocation": wall_s,
        "unfinished": unfinished,
        "provenance": provenance_summary(finished),
        "logged_rows_spike_definition": LOGGED_SPIKE_DEFINITION,
        "confidence": CONFIDENCE,
        "alpha": ALPHA,
        "power": POWER,
        "multiple_comparisons": {
            "method": "holm",
            "pairs": sum(p["p_holm"] is not None for p in pairs),
            "family": "every pair" if family is None else [f"{a}:{b}" for a, b in cfg.pairs],
        },
        "axes": [{"label": a.label, "key": a.key, "kinds": list(a.kinds)} for a in cfg.axes],
        "data": json.loads(data_all[0]) if len(set(data_all)) == 1 else {"varies_by_group": True},
        "train_tokens": {r.job.spec.name: r.train_tokens for recs in records.values() for r in recs},
        "groups": groups,
        "paired_differences": pairs,
        "throughput_bench": bench or None,
        "connection_parameters_per_layer": {"dim": first.model.dim, "table": parameter_table(first.model.dim)},
    }
