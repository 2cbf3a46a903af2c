"""Read a study's finished work from disk and reduce it to one summary (the statistics).

Input: the run directories (``metrics.csv``, ``config.yaml``, ``analysis.json``) and the probes'
``throughput.json`` / ``memory.json``. Output: one JSON-able dict holding everything the report
shows (:mod:`.render` reads nothing else): per group (a method x streams x axis values) the final
validation loss and bits per byte over seeds, their curves, speed, memory, stability and
diagnostics; per run its training tokens; the resolved data settings; and the paired-by-seed
differences of every pair of groups with t-based 95% confidence intervals (:mod:`.stats`).
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
from .stats import CONFIDENCE, mean_std, paired_difference
from .study import CompareConfig, Job

SPIKE_WINDOW = 10
SPIKE_RATIO = 1.2
SPIKE_DEFINITION = (
    f"a loss spike is a logged training loss more than {SPIKE_RATIO:g}x the median of the "
    f"{SPIKE_WINDOW} logged losses before it (counted after the warm-up steps)"
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
    """What one finished (or partly trained) run contributes."""

    job: Job
    train_steps: list[float]
    train_loss: list[float]
    train_tokens: int
    val_steps: list[float]
    val_loss: list[float]
    val_bpb: list[float]
    tokens_per_s: float
    peak_mem_mb: float
    max_grad_norm: float
    spikes: int
    analysis: dict | None


def load_record(job: Job) -> RunRecord | None:
    """The run's record, or None if it has no training and evaluation rows yet."""
    from ..train import read_metrics

    if not (job.run_dir / "metrics.csv").exists():
        return None
    rows = [
        {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for row in read_metrics(job.run_dir)
    ]
    train_rows = [r for r in rows if "loss" in r and "step" in r]
    val_rows = [r for r in rows if "val_loss" in r and "step" in r]
    if not train_rows or not val_rows:
        return None
    warmup = job.config.train.warmup_steps
    speed = [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r and r["step"] > warmup]
    speed = speed or [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r]
    analysis_path = job.run_dir / "analysis.json"
    return RunRecord(
        job=job,
        train_steps=[r["step"] for r in train_rows],
        train_loss=[r["loss"] for r in train_rows],
        train_tokens=int(max(r.get("tokens", 0.0) for r in train_rows)),
        val_steps=[r["step"] for r in val_rows],
        val_loss=[r["val_loss"] for r in val_rows],
        val_bpb=[r.get("val_bpb", math.nan) for r in val_rows],
        tokens_per_s=float(np.median(speed)) if speed else math.nan,
        peak_mem_mb=max((r.get("peak_mem_mb", math.nan) for r in train_rows), default=math.nan),
        max_grad_norm=max((r.get("grad_norm", math.nan) for r in train_rows), default=math.nan),
        spikes=count_spikes([r["loss"] for r in train_rows if r["step"] > warmup]),
        analysis=json.loads(analysis_path.read_text()) if analysis_path.exists() else None,
    )


def _curve(recs: list[RunRecord], steps: str, values: str) -> dict:
    """Mean and sd over seeds at the logged steps all seeds share (the shortest run's)."""
    length = min(len(getattr(r, values)) for r in recs)
    ys = np.array([getattr(r, values)[:length] for r in recs], dtype=float)
    return {"step": getattr(recs[0], steps)[:length], "mean": ys.mean(0).tolist(), "std": ys.std(0).tolist()}


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
    per_layer = {key: np.mean([[la["mean"][key] for la in a["layers"]] for a in analyses], 0).tolist()
                 for key in ("identity_distance", "negative_mass")}  # fmt: skip
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


def summarise(cfg: CompareConfig, jobs: Sequence[Job], wall_s: float, command: str) -> dict:
    """The summary of everything under ``cfg.out`` that belongs to this study."""
    records: dict[str, list[RunRecord]] = {}
    for job in jobs:
        rec = load_record(job)
        if rec is not None:
            records.setdefault(job.spec.group, []).append(rec)
    if not records:
        raise FileNotFoundError(f"no trained runs of this study under {cfg.out}")
    bench = _read_json(cfg.out / "throughput.json") or {}
    memory = (_read_json(cfg.out / "memory.json") or {}).get("groups", {})
    speed = {g: e["tokens_per_s"] for g, e in bench.get("groups", {}).items()}
    order = list(dict.fromkeys(job.spec.group for job in jobs if job.spec.group in records))
    base_group = next((g for g in order if records[g][0].job.spec.method == "residual"), None)
    base_loss = None if base_group is None else float(np.mean([r.val_loss[-1] for r in records[base_group]]))
    groups: dict[str, dict] = {}
    for group in order:
        recs = records[group]
        spec = recs[0].job.spec
        vl = mean_std([r.val_loss[-1] for r in recs])
        base_speed, own_speed = speed.get(base_group), speed.get(group)
        entry = {
            "method": spec.method,
            "streams": spec.streams,
            "axes": spec.axis_values,
            "seeds": [r.job.spec.seed for r in recs],
            "final_step": int(min(r.val_steps[-1] for r in recs)),
            "val_loss": vl,
            "val_loss_by_seed": {str(r.job.spec.seed): r.val_loss[-1] for r in recs},
            "val_bpb": mean_std([r.val_bpb[-1] for r in recs]),
            "val_loss_diff_to_residual": None if base_loss is None else vl["mean"] - base_loss,
            "train_tokens": {str(r.job.spec.seed): r.train_tokens for r in recs},
            "tokens_per_s": own_speed,
            "overhead_pct_vs_residual": None if not (base_speed and own_speed) else 100 * (base_speed / own_speed - 1),
            "tokens_per_s_training_log": float(np.mean([r.tokens_per_s for r in recs])),
            "peak_mem_mb_training_log": float(np.max([r.peak_mem_mb for r in recs])),
            "memory": memory.get(group),
            "max_grad_norm": float(np.max([r.max_grad_norm for r in recs])),
            "loss_spikes": int(sum(r.spikes for r in recs)),
            "data": data_settings(recs[0]),
            "curves": {"train_loss": _curve(recs, "train_steps", "train_loss"),
                       "val_loss": _curve(recs, "val_steps", "val_loss")},
        }  # fmt: skip
        analyses = [r.analysis for r in recs if r.analysis is not None]
        if analyses:
            entry.update(_diagnostics(analyses))
        groups[group] = entry
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            by_seed = {g: {int(s): v for s, v in groups[g]["val_loss_by_seed"].items()} for g in (a, b)}
            pairs.append({"a": a, "b": b, **paired_difference(by_seed[a], by_seed[b])})
    data_all = [json.dumps(e["data"], sort_keys=True) for e in groups.values()]
    first = records[order[0]][0].job.config
    return {
        "study": cfg.to_dict(),
        "command": command,
        "preset": cfg.preset,
        "machine": machine_description(),
        "wall_s_this_invocation": wall_s,
        "spike_definition": SPIKE_DEFINITION,
        "confidence": CONFIDENCE,
        "axes": [{"label": a.label, "key": a.key, "methods": list(a.methods)} for a in cfg.axes],
        "data": json.loads(data_all[0]) if len(set(data_all)) == 1 else {"varies_by_group": True},
        "train_tokens": {r.job.spec.name: r.train_tokens for recs in records.values() for r in recs},
        "groups": groups,
        "paired_differences": pairs,
        "throughput_bench": bench or None,
        "connection_parameters_per_layer": {"dim": first.model.dim, "table": parameter_table(first.model.dim)},
    }
