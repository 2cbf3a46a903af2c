"""``compare``: train every method x seed on one preset, analyse each run, write one report.

Layout of ``out``::

    out/<method>-n<streams>-s<seed>/     one run directory per method and seed (trainer's layout,
                                         plus analysis.json/.md and plots from analyze_run)
    out/report.md, out/summary.json, out/*.png

Runs already finished are skipped (their metrics are reused); runs interrupted are resumed from
their last checkpoint. The report is rewritten after every run, so it always shows what exists.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..connections import available_connections, connection_parameter_count
from . import plots
from .analyze import DEFAULT_BATCHES, analyze_run
from .probe import random_batch, saved_activation_bytes, training_step
from .report import atomic_write_text, fmt, md_table, write_json

SPIKE_WINDOW = 10
SPIKE_RATIO = 1.2
SPIKE_DEFINITION = (
    f"a loss spike is a logged training loss more than {SPIKE_RATIO:g}x the median of the "
    f"{SPIKE_WINDOW} logged losses before it (counted after the warm-up steps)"
)
PARAM_TABLE_STREAMS = tuple(range(2, 9))
INTERIM_REPORT_S = 120.0

DIAG_KEYS = (
    "identity_distance",
    "off_diagonal_mass",
    "negative_fraction",
    "negative_mass",
    "spectral_norm",
    "effective_rank",
    "row_sum_error",
    "column_sum_error",
)


@dataclass
class CompareConfig:
    preset: str
    methods: tuple[str, ...]
    streams: int = 4
    seeds: int = 1
    out: Path = Path("runs/compare")
    steps: int | None = None
    overrides: tuple[str, ...] = ()
    analyze_batches: int = DEFAULT_BATCHES
    bench_rounds: int = 5  # interleaved throughput rounds after training (0: skip)

    def validate(self) -> CompareConfig:
        kinds = available_connections()
        if not self.methods:
            raise ValueError("methods: give at least one connection kind")
        bad = [m for m in self.methods if m not in kinds]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(kinds)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must not repeat, got {','.join(self.methods)}")
        for name in ("streams", "seeds", "analyze_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.bench_rounds, int) or self.bench_rounds < 0:
            raise ValueError(f"bench_rounds must be an integer >= 0, got {self.bench_rounds!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        self.out = Path(self.out)
        return self

    def streams_for(self, method: str) -> int:
        return 1 if method == "residual" else self.streams

    def run_dir(self, method: str, seed: int) -> Path:
        return self.out / f"{method}-n{self.streams_for(method)}-s{seed}"


# --- running -------------------------------------------------------------------------------------


def train_config(cfg: CompareConfig, method: str, seed: int):
    from ..train.config import build_config

    return build_config(
        preset=cfg.preset,
        overrides=list(cfg.overrides),
        connection=method,
        streams=cfg.streams_for(method),
        steps=cfg.steps,
        seed=seed,
        out=str(cfg.run_dir(method, seed)),
    )


def run_compare(cfg: CompareConfig, log: Callable[[str], None] = print) -> dict:
    """Train, analyse and report every method x seed; returns the summary (also in summary.json)."""
    from ..train import is_finished, train

    cfg.validate()
    cfg.out.mkdir(parents=True, exist_ok=True)
    # validate every run's config before training anything
    jobs = [(seed, method, train_config(cfg, method, seed)) for seed in range(cfg.seeds) for method in cfg.methods]
    started = last_report = time.time()
    for i, (seed, method, tcfg) in enumerate(jobs):
        run_dir = cfg.run_dir(method, seed)
        if is_finished(run_dir):
            log(f"[compare] {run_dir.name}: finished, skipped")
        else:
            resume = (run_dir / "config.yaml").exists()
            log(f"[compare] {run_dir.name}: {'resuming' if resume else 'training'}")
            t0 = time.time()
            train(tcfg, resume=resume)
            log(f"[compare] {run_dir.name}: trained in {time.time() - t0:.0f} s")
        analysis = run_dir / "analysis.json"
        if not analysis.exists() or analysis.stat().st_mtime < (run_dir / "metrics.csv").stat().st_mtime:
            analyze_run(run_dir, batches=cfg.analyze_batches)
        # an interim report now and then, so a long comparison always shows what exists
        if i < len(jobs) - 1 and time.time() - last_report > INTERIM_REPORT_S:
            write_report(cfg, wall_s=time.time() - started)
            last_report = time.time()
    bench_path = cfg.out / "throughput.json"
    if cfg.bench_rounds and not _bench_current(bench_path, cfg):
        log(f"[compare] interleaved throughput: {cfg.bench_rounds} rounds x {BENCH_STEPS} steps per method")
        write_json(bench_path, interleaved_throughput(cfg))
    memory_path = cfg.out / "memory.json"
    if not _memory_current(memory_path, cfg):
        log("[compare] memory: activations saved for backward, per method")
        write_json(memory_path, measure_memory(cfg))
    summary = write_report(cfg, wall_s=time.time() - started)
    log(f"[compare] report: {cfg.out / 'report.md'} ({time.time() - started:.0f} s)")
    return summary


# --- throughput, interleaved ---------------------------------------------------------------------

BENCH_STEPS = 2  # timed training steps per method per round


def _bench_current(path: Path, cfg: CompareConfig) -> bool:
    if not path.exists():
        return False
    import json

    saved = json.loads(path.read_text())
    return saved.get("rounds") == cfg.bench_rounds and set(saved.get("tokens_per_s", {})) == set(cfg.methods)


def interleaved_throughput(cfg: CompareConfig) -> dict:
    """Training-step throughput of every method, measured side by side in this process.

    Each method's model is built from its seed-0 run's ``config.yaml`` (random weights, AdamW);
    after one warm-up step each, ``bench_rounds`` rounds time ``BENCH_STEPS`` steps
    (forward, backward, optimiser) of every method on the same random batch, in a rotating order,
    so slow phases of a shared machine hit every method alike. Returns the median tokens/s.
    """
    from ..model import LanguageModel
    from ..train.config import load_config

    torch.manual_seed(0)
    setups = {}
    for method in cfg.methods:
        tcfg = load_config(cfg.run_dir(method, 0) / "config.yaml")
        model = LanguageModel(tcfg.model).train()
        setups[method] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    batch, seq_len, vocab = tcfg.train.batch_size, tcfg.train.seq_len, tcfg.model.vocab_size
    if tcfg.train.threads is not None:
        torch.set_num_threads(tcfg.train.threads)  # as the runs trained
    x, y = random_batch(batch, seq_len, vocab)

    def step(model, opt) -> None:
        training_step(model, opt, x, y)

    for model, opt in setups.values():
        step(model, opt)
    times: dict[str, list[float]] = {m: [] for m in setups}
    order = list(setups)
    for r in range(cfg.bench_rounds):
        for method in order[r % len(order) :] + order[: r % len(order)]:
            t0 = time.perf_counter()
            for _ in range(BENCH_STEPS):
                step(*setups[method])
            times[method].append((time.perf_counter() - t0) / BENCH_STEPS)
    return {
        "rounds": cfg.bench_rounds,
        "steps_per_round": BENCH_STEPS,
        "batch": [batch, seq_len],
        "threads": torch.get_num_threads(),
        "step_s": times,
        "tokens_per_s": {m: batch * seq_len / float(np.median(t)) for m, t in times.items()},
    }


def _memory_current(path: Path, cfg: CompareConfig) -> bool:
    import json

    return path.exists() and set(json.loads(path.read_text()).get("methods", {})) == set(cfg.methods)


def measure_memory(cfg: CompareConfig) -> dict:
    """Per method: MB of activations saved for backward in one training step of the preset's batch
    (:func:`~shc.analysis.probe.saved_activation_bytes`) and MB of parameters + gradients + AdamW
    state (16 bytes per float32 parameter)."""
    from ..model import LanguageModel
    from ..train.config import load_config

    out = {}
    for method in cfg.methods:
        tcfg = load_config(cfg.run_dir(method, 0) / "config.yaml")
        torch.manual_seed(0)
        model = LanguageModel(tcfg.model).train()
        x, y = random_batch(tcfg.train.batch_size, tcfg.train.seq_len, tcfg.model.vocab_size)
        params = sum(p.numel() for p in model.parameters())
        out[method] = {
            "activations_mb": saved_activation_bytes(model, x, y) / 2**20,
            "params_grads_adam_mb": 16 * params / 2**20,
            "batch": [tcfg.train.batch_size, tcfg.train.seq_len],
        }
    return {"methods": out}


# --- reading runs --------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of the run's ``metrics.csv`` (trainer's reader), numeric cells only."""
    from ..train.metrics import read_metrics as read_csv

    return [
        {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for row in read_csv(run_dir)
    ]


def count_spikes(losses: Sequence[float]) -> int:
    count = 0
    for i in range(SPIKE_WINDOW, len(losses)):
        if losses[i] > SPIKE_RATIO * float(np.median(losses[i - SPIKE_WINDOW : i])):
            count += 1
    return count


@dataclass
class RunRecord:
    method: str
    seed: int
    train_steps: np.ndarray
    train_loss: np.ndarray
    val_steps: np.ndarray
    val_loss: np.ndarray
    val_bpb: np.ndarray
    tokens_per_s: float
    peak_mem_mb: float
    max_grad_norm: float
    spikes: int
    analysis: dict | None


def load_record(cfg: CompareConfig, method: str, seed: int, warmup_steps: int) -> RunRecord | None:
    import json

    run_dir = cfg.run_dir(method, seed)
    metrics = run_dir / "metrics.csv"
    if not metrics.exists():
        return None
    rows = read_metrics(run_dir)
    train_rows = [r for r in rows if "loss" in r and "step" in r]
    val_rows = [r for r in rows if "val_loss" in r and "step" in r]
    if not train_rows or not val_rows:
        return None
    speed = [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r and r["step"] > warmup_steps]
    speed = speed or [r["tokens_per_s"] for r in train_rows if "tokens_per_s" in r]
    losses = [r["loss"] for r in train_rows if r["step"] > warmup_steps]
    analysis_path = run_dir / "analysis.json"
    return RunRecord(
        method=method,
        seed=seed,
        train_steps=np.array([r["step"] for r in train_rows]),
        train_loss=np.array([r["loss"] for r in train_rows]),
        val_steps=np.array([r["step"] for r in val_rows]),
        val_loss=np.array([r["val_loss"] for r in val_rows]),
        val_bpb=np.array([r.get("val_bpb", math.nan) for r in val_rows]),
        tokens_per_s=float(np.median(speed)) if speed else math.nan,
        peak_mem_mb=max((r.get("peak_mem_mb", math.nan) for r in train_rows), default=math.nan),
        max_grad_norm=max((r.get("grad_norm", math.nan) for r in train_rows), default=math.nan),
        spikes=count_spikes(losses),
        analysis=json.loads(analysis_path.read_text()) if analysis_path.exists() else None,
    )


def mean_std(values: Sequence[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()) if arr.size else math.nan,
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
        "values": arr.tolist(),
    }


def parameter_table(dim: int) -> dict[str, dict[str, int | None]]:
    """Learnable parameters of ONE connection of width ``dim`` for n = 1..8 (None = refused)."""
    table: dict[str, dict[str, int | None]] = {}
    for kind in available_connections():
        row: dict[str, int | None] = {}
        for n in (1, *PARAM_TABLE_STREAMS):
            try:
                row[str(n)] = connection_parameter_count(kind, n, dim)
            except ValueError:
                row[str(n)] = None
        table[kind] = row
    # n = 9 for mhc_lite shows the refusal beyond 8
    try:
        table["mhc_lite"]["9"] = connection_parameter_count("mhc_lite", 9, dim)
    except ValueError:
        table["mhc_lite"]["9"] = None
    return table


# --- the report ----------------------------------------------------------------------------------


def summarise(
    cfg: CompareConfig,
    records: dict[str, list[RunRecord]],
    dim: int,
    wall_s: float,
    bench: dict | None,
    memory: dict | None = None,
) -> dict:
    methods: dict[str, dict] = {}
    base = records.get("residual")
    bench = bench or {}
    bench_speed = bench.get("tokens_per_s", {})
    base_speed = bench_speed.get("residual")
    base_loss = float(np.mean([r.val_loss[-1] for r in base])) if base else None
    for method, recs in records.items():
        if not recs:
            continue
        vl = mean_std([r.val_loss[-1] for r in recs])
        speed = bench_speed.get(method)
        entry = {
            "seeds": [r.seed for r in recs],
            "final_step": int(min(r.val_steps[-1] for r in recs)),
            "val_loss": vl,
            "val_bpb": mean_std([r.val_bpb[-1] for r in recs]),
            "val_loss_diff_to_residual": None if base_loss is None else vl["mean"] - base_loss,
            "tokens_per_s_training_log": float(np.mean([r.tokens_per_s for r in recs])),
            "tokens_per_s": speed,
            "overhead_pct_vs_residual": (
                None if not (base_speed and speed) else 100.0 * (base_speed / speed - 1.0)
            ),
            "peak_mem_mb_training_log": float(np.max([r.peak_mem_mb for r in recs])),
            "memory": ((memory or {}).get("methods") or {}).get(method),
            "max_grad_norm": float(np.max([r.max_grad_norm for r in recs])),
            "loss_spikes": int(sum(r.spikes for r in recs)),
        }
        analyses = [r.analysis for r in recs if r.analysis is not None]
        if analyses:
            info = analyses[0]["info"]
            entry["params_total"] = info["parameters (total)"]
            entry["params_connections"] = info["parameters (connections)"]
            summ = [a["summary"] for a in analyses]
            entry["diagnostics"] = {
                part: {k: float(np.mean([s[part][k] for s in summ])) for k in summ[0][part]}
                for part in ("mean", "worst", "composite")
            }
            if "sinkhorn_error_curve" in summ[0]:
                entry["sinkhorn_error_curve"] = np.mean([s["sinkhorn_error_curve"] for s in summ], 0).tolist()
                entry["sinkhorn_iters"] = summ[0]["sinkhorn_iters"]
            per_layer = {}
            for key in ("identity_distance", "negative_mass"):
                per_layer[key] = np.mean(
                    [[layer["mean"][key] for layer in a["layers"]] for a in analyses], 0
                ).tolist()
            per_layer["composite_forward_gain_max"] = np.max(
                [a["composite"]["forward_gain_max"] for a in analyses], 0
            ).tolist()
            per_layer["composite_backward_gain_max"] = np.max(
                [a["composite"]["backward_gain_max"] for a in analyses], 0
            ).tolist()
            per_layer["composite_spectral_norm_mean"] = np.mean(
                [a["composite"]["spectral_norm_mean"] for a in analyses], 0
            ).tolist()
            entry["per_layer"] = per_layer
        methods[method] = entry
    return {
        "preset": cfg.preset,
        "streams": cfg.streams,
        "seeds": cfg.seeds,
        "steps": cfg.steps,
        "overrides": list(cfg.overrides),
        "methods_requested": list(cfg.methods),
        "wall_s_this_invocation": wall_s,
        "machine": machine_description(),
        "throughput_bench": bench,
        "spike_definition": SPIKE_DEFINITION,
        "methods": methods,
        "connection_parameters_per_layer": {"dim": dim, "table": parameter_table(dim)},
    }


def machine_description() -> str:
    import os

    return (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def _pm(stats: dict, digits: int = 4) -> str:
    return f"{fmt(stats['mean'], digits)} ± {fmt(stats['std'], digits)}"


def _sign(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


def _band(recs: list[RunRecord], attr_x: str, attr_y: str, skip: float = 0.1):
    """Mean and std over seeds; the first ``skip`` share of the points (the initial drop, which
    would flatten the rest of the plot) is left out."""
    length = min(len(getattr(r, attr_y)) for r in recs)
    start = min(int(np.ceil(skip * length)), max(length - 2, 0))
    x = getattr(recs[0], attr_x)[start:length]
    ys = np.stack([getattr(r, attr_y)[start:length] for r in recs])
    return x, ys.mean(0), ys.std(0)


def write_plots(out: Path, records: dict[str, list[RunRecord]], summary: dict) -> list[str]:
    written = []
    recs = {m: r for m, r in records.items() if r}
    if recs:
        plots.curves_with_band(
            {m: _band(r, "train_steps", "train_loss") for m, r in recs.items()},
            out / "loss_curves.png", "step", "training loss (mean ± std over seeds)",
            "training loss (first 10% of the logged steps left out)",
        )
        plots.curves_with_band(
            {m: _band(r, "val_steps", "val_loss") for m, r in recs.items()},
            out / "val_loss_curves.png", "step", "validation loss (mean ± std over seeds)",
            "validation loss (first evaluations left out)",
        )
        written += ["loss_curves.png", "val_loss_curves.png"]
    per_layer = {m: e["per_layer"] for m, e in summary["methods"].items() if "per_layer" in e}
    if per_layer:
        plots.per_layer(
            {
                "identity distance ‖H−I‖_F": {m: p["identity_distance"] for m, p in per_layer.items()},
                "negative mass": {m: p["negative_mass"] for m, p in per_layer.items()},
            },
            out / "diagnostics_per_layer.png",
        )
        plots.per_layer(
            {
                "composite forward gain (max over tokens)": {
                    m: p["composite_forward_gain_max"] for m, p in per_layer.items()
                },
                "composite backward gain (max over tokens)": {
                    m: p["composite_backward_gain_max"] for m, p in per_layer.items()
                },
            },
            out / "composite_gain.png",
            logy=True,
        )
        written += ["diagnostics_per_layer.png", "composite_gain.png"]
    curves = {m: e["sinkhorn_error_curve"] for m, e in summary["methods"].items() if "sinkhorn_error_curve" in e}
    if curves:
        plots.curves_with_band(
            {m: (np.arange(1, len(c) + 1), np.array(c), np.zeros(len(c))) for m, c in curves.items()},
            out / "sinkhorn_error.png", "Sinkhorn iterations", "mean column-sum error",
            "mHC: Sinkhorn error on the captured logits", logy=True,
        )
        written.append("sinkhorn_error.png")
    table = summary["connection_parameters_per_layer"]["table"]
    ns = list(PARAM_TABLE_STREAMS)
    lines = {}
    for kind, row in table.items():
        vals = [row[str(n)] for n in ns]
        if any(v is not None for v in vals):
            lines[kind] = (np.array(ns), np.array([np.nan if v is None else v for v in vals], float),
                           np.zeros(len(ns)))
    plots.curves_with_band(
        lines, out / "connection_params_vs_n.png", "streams n", "parameters per connection",
        f"connection parameters per layer (C = {summary['connection_parameters_per_layer']['dim']})", logy=True,
    )
    written.append("connection_params_vs_n.png")
    return written


def report_markdown(cfg: CompareConfig, summary: dict, figures: list[str], command: str) -> str:
    ms = summary["methods"]
    order = [m for m in cfg.methods if m in ms]
    lines = [
        f"# Comparison: preset `{cfg.preset}`, n = {cfg.streams}, {cfg.seeds} seed(s)",
        "",
        f"- command: `{command}`",
        f"- machine: {summary['machine']}",
        f"- wall time of the invocation that wrote this report: {summary['wall_s_this_invocation']:.0f} s",
        "- runs: " + ", ".join(f"{m} ({len(ms[m]['seeds'])} seed(s), step {ms[m]['final_step']})" for m in order),
        "",
        "## Validation loss and bits per byte (final evaluation, mean ± std over seeds)",
        "",
    ]
    rows = [
        [m, _pm(ms[m]["val_loss"]), _sign(ms[m]["val_loss_diff_to_residual"]), _pm(ms[m]["val_bpb"]),
         " ".join(fmt(v, 4) for v in ms[m]["val_loss"]["values"])]
        for m in order
    ]
    lines += [md_table(["method", "val loss", "Δ vs residual", "val bpb", "per seed"], rows), ""]
    lines += ["std: sample standard deviation over seeds (0 with one seed).", ""]
    lines += ["![training loss](loss_curves.png)", "", "![validation loss](val_loss_curves.png)", ""]
    lines += [
        "## Throughput, memory and parameters",
        "",
        "Throughput: training tokens/s of each method measured side by side after training "
        "(`interleaved_throughput`: each model rebuilt from its config, "
        f"{(summary['throughput_bench'] or {}).get('rounds', 0)} rounds x {BENCH_STEPS} timed steps "
        "of forward + backward + AdamW on one batch of the preset's shape, methods in rotating "
        "order, median); overhead = `tokens/s(residual) / tokens/s(method) - 1` (extra time per "
        "token). The training-log column is the median logged `tokens_per_s` of each run after "
        "warm-up (runs trained one after another on a machine shared with other jobs: noisier). "
        "Memory: MB of the tensors autograd saves for backward in one training step of the "
        "preset's batch (distinct storages, `shc.analysis.probe.saved_activation_bytes`; where "
        "the methods differ), and MB of parameters + gradients + AdamW state (16 bytes per "
        "parameter). The trainer's CPU `peak_mem_mb` is the peak RSS of the whole compare process "
        "(imports and earlier runs included), kept in summary.json only.",
        "",
    ]
    rows = [
        [m, fmt(ms[m]["tokens_per_s"], 1),
         "-" if ms[m]["overhead_pct_vs_residual"] is None else f"{ms[m]['overhead_pct_vs_residual']:+.1f}%",
         fmt(ms[m]["tokens_per_s_training_log"], 1),
         fmt((ms[m]["memory"] or {}).get("activations_mb"), 1),
         fmt((ms[m]["memory"] or {}).get("params_grads_adam_mb"), 1),
         ms[m].get("params_total", "-"), ms[m].get("params_connections", "-")]
        for m in order
    ]
    lines += [md_table(["method", "tokens/s (interleaved)", "overhead", "tokens/s (training log)",
                        "activations (MB)", "params+grads+Adam (MB)", "params total", "params in connections"],
                       rows), ""]
    lines += ["## Stability", "", f"Definition: {SPIKE_DEFINITION}.", ""]
    rows = [[m, fmt(ms[m]["max_grad_norm"], 3), ms[m]["loss_spikes"]] for m in order]
    lines += [md_table(["method", "max grad norm (before clipping)", "loss spikes (all seeds)"], rows), ""]
    lines += [
        "## Diagnostics of H_res (layer-averaged / worst layer; mean over seeds)",
        "",
        "Per-token values averaged over the validation tokens of `shc analyze`; "
        "worst layer = the layer with the largest mean (smallest for effective rank; for spectral "
        "norm and sum errors the largest per-token value). Composite: the product of all "
        "connections' H_res in depth order; forward gain = max absolute row sum of the operator "
        "(`||A||_inf`), backward gain = max absolute column sum (`||A||_1`), both as the max over "
        "tokens; `||A||_2` mean over tokens. Definitions in each run's `analysis.md`.",
        "",
    ]
    rows = []
    for m in order:
        d = ms[m].get("diagnostics")
        if d is None:
            continue
        a, w, c = d["mean"], d["worst"], d["composite"]
        rows.append([
            m,
            f"{fmt(a['identity_distance'])} / {fmt(w['identity_distance'])}",
            f"{fmt(a['off_diagonal_mass'])} / {fmt(w['off_diagonal_mass'])}",
            f"{fmt(a['negative_fraction'], 3)} / {fmt(w['negative_fraction'], 3)}",
            f"{fmt(a['negative_mass'])} / {fmt(w['negative_mass'])}",
            f"{fmt(a['spectral_norm'])} / {fmt(w['spectral_norm'])}",
            f"{fmt(a['effective_rank'], 3)} / {fmt(w['effective_rank'], 3)}",
            f"{fmt(w['row_sum_error'], 2)} / {fmt(w['column_sum_error'], 2)}",
            fmt(c["forward_gain_max"]),
            fmt(c["backward_gain_max"]),
            fmt(c["spectral_norm_mean"]),
        ])
    lines += [md_table(["method", "‖H−I‖_F", "off-diag mass", "neg frac", "neg mass", "‖H‖₂",
                        "eff rank", "row / col err (worst)", "composite fwd gain", "composite bwd gain",
                        "composite ‖A‖₂"], rows), ""]
    lines += ["![diagnostics per layer](diagnostics_per_layer.png)", "", "![composite gain](composite_gain.png)", ""]
    if "sinkhorn_error.png" in figures:
        m = next(m for m in order if "sinkhorn_error_curve" in ms[m])
        curve = ms[m]["sinkhorn_error_curve"]
        picks = [k for k in (1, 2, 5, 10, 20, 30, 50) if k <= len(curve)]
        lines += [
            f"## Sinkhorn error (mHC, configured {ms[m]['sinkhorn_iters']} iterations)",
            "",
            "Mean column-sum error of `sinkhorn_log(L, k)` on the captured logits L (rows are exact).",
            "",
            md_table([f"k={k}" for k in picks], [[f"{curve[k - 1]:.2e}" for k in picks]]),
            "",
            "![Sinkhorn error](sinkhorn_error.png)",
            "",
        ]
    par = summary["connection_parameters_per_layer"]
    cols = ["1", *[str(n) for n in PARAM_TABLE_STREAMS], "9"]
    rows = []
    for kind, row in par["table"].items():
        rows.append([kind, *[("refused" if row.get(c) is None else row[c]) if c in row else "" for c in cols]])
    rows.append(["(n!)", *[math.factorial(int(c)) for c in cols]])
    lines += [
        f"## Connection parameters per layer vs n (C = {par['dim']})",
        "",
        "Learnable parameters of one connection (`shc.connection_parameter_count`); `refused` = the "
        "kind rejects that n (residual: n = 1 only; kromhc: powers of two; mhc_lite: n ≤ 8, its "
        "projection has n! residual outputs per token).",
        "",
        md_table(["kind", *[f"n={c}" for c in cols]], rows),
        "",
        "![parameters vs n](connection_params_vs_n.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(cfg: CompareConfig, wall_s: float, command: str | None = None) -> dict:
    """Read every run under ``cfg.out`` and write ``report.md``, ``summary.json`` and the plots."""
    from ..train.config import load_config

    records: dict[str, list[RunRecord]] = {m: [] for m in cfg.methods}
    dim = None
    for method in cfg.methods:
        for seed in range(cfg.seeds):
            run_dir = cfg.run_dir(method, seed)
            if not (run_dir / "config.yaml").exists():
                continue
            tcfg = load_config(run_dir / "config.yaml")
            dim = tcfg.model.dim
            rec = load_record(cfg, method, seed, tcfg.train.warmup_steps)
            if rec is not None:
                records[method].append(rec)
    if dim is None:
        raise FileNotFoundError(f"no runs under {cfg.out}")
    import json

    bench_path, memory_path = cfg.out / "throughput.json", cfg.out / "memory.json"
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else None
    memory = json.loads(memory_path.read_text()) if memory_path.exists() else None
    summary = summarise(cfg, records, dim, wall_s, bench, memory)
    command = command or compare_command(cfg)
    summary["command"] = command
    figures = write_plots(cfg.out, records, summary)
    write_json(cfg.out / "summary.json", summary)
    atomic_write_text(cfg.out / "report.md", report_markdown(cfg, summary, figures, command))
    return summary


def compare_command(cfg: CompareConfig) -> str:
    parts = [
        "shc compare", f"--preset {cfg.preset}", f"--methods {','.join(cfg.methods)}",
        f"--streams {cfg.streams}", f"--seeds {cfg.seeds}", f"--out {cfg.out}",
    ]
    if cfg.steps is not None:
        parts.append(f"--steps {cfg.steps}")
    parts += [f"--set {o}" for o in cfg.overrides]
    return " ".join(parts)


def summary_table(summary: dict, methods: Sequence[str]) -> str:
    """The headline table: method, val loss mean ± std, overhead %, identity distance, negative mass."""
    ms = summary["methods"]
    rows = []
    for m in methods:
        if m not in ms:
            continue
        e = ms[m]
        d = e.get("diagnostics", {}).get("mean", {})
        oh = e["overhead_pct_vs_residual"]
        rows.append([
            m, _pm(e["val_loss"]), "-" if oh is None else f"{oh:+.1f}%",
            fmt(d.get("identity_distance")), fmt(d.get("negative_mass")),
        ])
    return md_table(["method", "val loss (mean ± std)", "overhead vs residual", "‖H−I‖_F", "neg mass"], rows)
