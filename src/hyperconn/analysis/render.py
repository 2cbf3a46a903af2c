"""Render a study's summary (from :mod:`.summarise`) as ``report.md`` and PNG plots; reads nothing else."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text
from . import plots
from .evidence import final_eval_line, paired_section, provenance_line, signed, stability_section, unfinished_block
from .report import fmt, md_table
from .summarise import PARAM_TABLE_STREAMS

RERENDER = (
    "Re-render this report from the finished runs without training: run the same `hyperconn compare` command "
    "with `--report-only` added (or `hyperconn compare --report-only --out DIR`, which reads the study from "
    "`DIR/study.json`)."
)


def display_names(summary: dict) -> dict[str, str]:
    """Group -> the label shown: the kind alone when it identifies the group (no axes, one n)."""
    groups = summary["groups"]
    kinds = [e["kind"] for e in groups.values()]
    if len(set(kinds)) == len(kinds):
        return {g: e["kind"] for g, e in groups.items()}
    return {g: g for g in groups}


def data_line(data: dict) -> str:
    if data.get("varies_by_group"):
        return "differs between groups (see summary.json, groups.*.data)"
    text = f"source `{data['source']}`"
    if "description" in data:
        text += f" ({data['description']})"
    text += f", tokenizer `{data['tokenizer']}`" + (f" ({data['bpe_vocab_size']})" if "bpe_vocab_size" in data else "")
    split = data.get("split")
    if split:
        text += "; split: " + ", ".join(
            f"{part} {split[f'{part}_documents']:,} documents / {split[f'{part}_bytes']:,} bytes / "
            f"{split[f'{part}_tokens']:,} tokens" for part in ("train", "val") if f"{part}_documents" in split)
    return text + f" (val_fraction {data['val_fraction']} where the source has no fixed held-out set)"


def mean_sd_text(stats: dict, digits: int = 4) -> str:
    """``mean ± sd``; the mean alone for one seed (which has no spread)."""
    if stats.get("n", len(stats.get("values", ()))) < 2:
        return f"{fmt(stats['mean'], digits)} (1 seed)"
    return f"{fmt(stats['mean'], digits)} ± {fmt(stats['std'], digits)}"


def restated_block(summary: dict) -> list[str]:
    """The rules under which a committed summary was restated from its own data (:mod:`.restate`)."""
    notes = summary.get("restated") or []
    if not notes:
        return []
    return ["- restated from this summary.json's own data (`scripts/restate_summaries.py`, "
            "`hyperconn.analysis.restate`): " + "; ".join(notes)]  # fmt: skip


def _skip(curve: dict, share: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The curve without its first ``share`` of points (the initial drop would flatten the rest)."""
    length = len(curve["step"])
    start = min(int(np.ceil(share * length)), max(length - 2, 0))
    return tuple(np.array(curve[k][start:], dtype=float) for k in ("step", "mean", "std"))


def write_plots(out: Path, summary: dict) -> list[str]:
    names, groups = display_names(summary), summary["groups"]
    written = []
    for key, file, label in (("train_loss", "loss_curves.png", "training loss"),
                             ("val_loss", "val_loss_curves.png", "validation loss")):  # fmt: skip
        plots.curves_with_band(
            {names[g]: _skip(e["curves"][key]) for g, e in groups.items()}, out / file, "step",
            f"{label} (mean ± sample sd over seeds)", f"{label} (first 10% of the logged points left out)",
        )  # fmt: skip
        written.append(file)
    per_layer = {names[g]: e["per_layer"] for g, e in groups.items() if "per_layer" in e}
    if per_layer:
        plots.per_layer(
            {"identity distance ‖H−I‖_F": {m: p["identity_distance"] for m, p in per_layer.items()},
             "negative mass": {m: p["negative_mass"] for m, p in per_layer.items()}},
            out / "diagnostics_per_layer.png",
        )  # fmt: skip
        plots.per_layer(
            {f"composite {way} gain (max over tokens)": {m: p[f"composite_{way}_gain_max"]
                                                          for m, p in per_layer.items()}
             for way in ("forward", "backward")},
            out / "composite_gain.png", logy=True,
        )  # fmt: skip
        written += ["diagnostics_per_layer.png", "composite_gain.png"]
    curves = {names[g]: e["sinkhorn_error_curve"] for g, e in groups.items() if "sinkhorn_error_curve" in e}
    if curves:
        plots.curves_with_band(
            {m: (np.arange(1, len(c) + 1), np.array(c), np.zeros(len(c))) for m, c in curves.items()},
            out / "sinkhorn_error.png", "Sinkhorn iterations", "mean column-sum error",
            "mHC: Sinkhorn error on the captured logits", logy=True,
        )  # fmt: skip
        written.append("sinkhorn_error.png")
    par = summary["connection_parameters_per_layer"]
    ns = list(PARAM_TABLE_STREAMS)
    lines = {}
    for kind, row in par["table"].items():
        vals = [row.get(str(n)) for n in ns]
        if any(v is not None for v in vals):
            lines[kind] = (np.array(ns), np.array([np.nan if v is None else v for v in vals], float), np.zeros(len(ns)))
    plots.curves_with_band(lines, out / "connection_params_vs_n.png", "streams n", "parameters per connection",
                           f"connection parameters per layer (C = {par['dim']})", logy=True)  # fmt: skip
    written.append("connection_params_vs_n.png")
    return written


def _axis_columns(summary: dict) -> list[str]:
    return [a["label"] for a in summary["axes"]]


def _by_axis(summary: dict) -> list[str]:
    """Per axis: rows = the other settings, columns = the axis values, cells = final val loss."""
    lines: list[str] = []
    groups = summary["groups"]
    for axis in summary["axes"]:
        label = axis["label"]
        values = list(dict.fromkeys(e["axes"][label] for e in groups.values() if label in e["axes"]))
        table: dict[str, dict] = {}
        for e in groups.values():
            if label not in e["axes"]:
                continue
            rest = f"{e['kind']}-n{e['num_streams']}" + "".join(
                f"-{k}{v}" for k, v in e["axes"].items() if k != label)
            table.setdefault(rest, {})[e["axes"][label]] = e
        rows = [[rest, *[mean_sd_text(cells[v]["val_loss"]) if v in cells else "-" for v in values]]
                for rest, cells in table.items()]  # fmt: skip
        lines += [f"### `{axis['key']}` (`{label}`)", "",
                  md_table(["runs", *[f"{label} = {v}" for v in values]], rows), ""]  # fmt: skip
    return lines


def report_markdown(summary: dict, figures: list[str]) -> str:
    groups, names = summary["groups"], display_names(summary)
    axes = _axis_columns(summary)
    study = summary["study"]
    lines = [
        f"# Comparison: preset `{summary['preset']}`, n = {', '.join(map(str, study['num_streams']))}, "
        f"{study['seeds']} seed(s)",
        "",
        *unfinished_block(summary),
        f"- command: `{summary['command']}`",
        f"- code: {provenance_line(summary.get('provenance'))}",
        *restated_block(summary),
        f"- machine: {summary['machine']}",
        f"- wall time of the invocation that wrote this report: {summary['wall_s_this_invocation']:.0f} s",
        "- groups: " + ", ".join(f"{names[g]} ({len(e['seeds'])} seed(s), step {e['final_step']})"
                                 for g, e in groups.items()),
        f"- data: {data_line(summary['data'])}",
        "- training tokens per run: " + ", ".join(f"{k} {v:,}" for k, v in summary["train_tokens"].items()),
        f"- {RERENDER}",
        "",
        "## Validation loss and bits per byte (final evaluation, mean ± std over seeds)",
        "",
        final_eval_line(summary),
        "",
    ]  # fmt: skip
    rows = [
        [names[g], *[e["axes"].get(a, "-") for a in axes], mean_sd_text(e["val_loss"]),
         signed(e["val_loss_diff_to_residual"]),
         mean_sd_text(e["val_bpb"]), " ".join(fmt(v, 4) for v in e["val_loss"]["values"])]
        for g, e in groups.items()
    ]  # fmt: skip
    lines += [md_table(["group", *axes, "val loss", "Δ vs residual", "val bpb", "per seed"], rows), ""]
    lines += ["std: sample standard deviation over seeds (a single seed shows its value alone). Δ vs residual: "
              "difference of the means, against the residual group of the same axis values (`-` where there is "
              "none).", ""]  # fmt: skip
    if axes:
        lines += ["## By axis (final validation loss, mean ± std over seeds)", "", *_by_axis(summary)]
    lines += paired_section(summary, names)
    lines += ["![training loss](loss_curves.png)", "", "![validation loss](val_loss_curves.png)", ""]
    lines += _speed_section(summary, names)
    lines += stability_section(summary, names)
    lines += _diagnostics_section(summary, names, figures)
    lines += _parameter_section(summary)
    return "\n".join(lines)


def _speed_section(summary: dict, names: dict[str, str]) -> list[str]:
    bench = summary["throughput_bench"]
    if bench:
        throughput = (
            "Throughput: training tokens/s of each group measured side by side after training "
            "(`hyperconn.bench.timing.interleaved_medians`: each model rebuilt from its config, "
            f"{bench['rounds']} rounds of {bench['steps_per_call']} steps of forward + backward + AdamW "
            "on one batch of the run's shape, groups in rotating order, median); overhead = "
            "`tokens/s(residual) / tokens/s(group) - 1`."
        )
    elif summary["study"].get("bench_rounds") == 0:
        throughput = "Throughput: the side-by-side measurement was not run (`--bench-rounds 0`)."
    else:
        throughput = "Throughput: the side-by-side measurement has not run yet (it follows the training)."
    lines = [
        "## Throughput, memory and parameters",
        "",
        f"{throughput} The training-log column is the median logged `tokens_per_s` of each run after warm-up, "
        "averaged over seeds (measured while the run trained; what else the machine ran then is not recorded). "
        "Memory: MB of the tensors autograd saves for backward in one forward + loss of the "
        "run's batch (distinct storages, `hyperconn.bench.timing.saved_activation_bytes`), and MB of "
        "parameters + gradients + AdamW state (16 bytes per parameter). The trainer's CPU `peak_mem_mb` "
        "is the peak RSS of the whole process, kept in summary.json only.",
        "",
    ]
    rows = []
    for g, e in summary["groups"].items():
        mem = e["memory"] or {}
        oh = e["overhead_pct_vs_residual"]
        rows.append([names[g], fmt(e["tokens_per_s"], 1), "-" if oh is None else f"{oh:+.1f}%",
                     fmt(e["tokens_per_s_training_log"], 1), fmt(mem.get("activations_mb"), 1),
                     fmt(mem.get("params_grads_adam_mb"), 1), e.get("params_total", "-"),
                     e.get("params_connections", "-")])  # fmt: skip
    header = ["group", "tokens/s (interleaved)", "overhead", "tokens/s (training log)", "activations (MB)",
              "params+grads+Adam (MB)", "params total", "params in connections"]  # fmt: skip
    return [*lines, md_table(header, rows), ""]


def _diagnostics_section(summary: dict, names: dict[str, str], figures: list[str]) -> list[str]:
    lines = [
        "## Diagnostics of H_res (layer-averaged / worst layer; mean over seeds)",
        "",
        "Per-token values averaged over the validation tokens of `hyperconn analyze`; worst layer = the layer "
        "with the largest mean (smallest for effective rank; for spectral norm and sum errors the largest "
        "per-token value). Composite: the product of all connections' H_res in depth order; forward gain "
        "= max absolute row sum of the operator (`||A||_inf`), backward gain = max absolute column sum "
        "(`||A||_1`), both as the max over tokens; `||A||_2` mean over tokens. Definitions in each run's "
        "`analysis.md`.",
        "",
    ]
    rows = []
    for g, e in summary["groups"].items():
        d = e.get("diagnostics")
        if d is None:
            continue
        a, w, c = d["mean"], d["worst"], d["composite"]
        rows.append([
            names[g], *(f"{fmt(a.get(k), p)} / {fmt(w.get(k), p)}" for k, p in (
                ("identity_distance", 4), ("off_diagonal_mass", 4), ("negative_fraction", 3),
                ("negative_mass", 4), ("spectral_norm", 4), ("effective_rank", 3))),
            f"{fmt(w.get('row_sum_error'), 2)} / {fmt(w.get('column_sum_error'), 2)}",
            fmt(c["forward_gain_max"]), fmt(c["backward_gain_max"]), fmt(c["spectral_norm_mean"]),
        ])  # fmt: skip
    header = ["group", "‖H−I‖_F", "off-diag mass", "neg frac", "neg mass", "‖H‖₂", "eff rank",
              "row / col err (worst)", "composite fwd gain", "composite bwd gain", "composite ‖A‖₂"]  # fmt: skip
    lines += [md_table(header, rows), ""]
    if "diagnostics_per_layer.png" in figures:
        lines += ["![diagnostics per layer](diagnostics_per_layer.png)", "",
                  "![composite gain](composite_gain.png)", ""]  # fmt: skip
    if "sinkhorn_error.png" in figures:
        g, e = next((g, e) for g, e in summary["groups"].items() if "sinkhorn_error_curve" in e)
        curve = e["sinkhorn_error_curve"]
        picks = [k for k in (1, 2, 5, 10, 20, 30, 50) if k <= len(curve)]
        lines += [
            f"## Sinkhorn error ({names[g]}, configured {e['sinkhorn_iters']} iterations)",
            "",
            "Mean column-sum error of `sinkhorn_log(L, k)` on the captured logits L (rows are exact).",
            "",
            md_table([f"k={k}" for k in picks], [[f"{curve[k - 1]:.2e}" for k in picks]]),
            "",
            "![Sinkhorn error](sinkhorn_error.png)",
            "",
        ]
    return lines


def _parameter_section(summary: dict) -> list[str]:
    par = summary["connection_parameters_per_layer"]
    cols = ["1", *[str(n) for n in PARAM_TABLE_STREAMS], "9"]
    rows = [[kind, *[("refused" if row[c] is None else row[c]) if c in row else "" for c in cols]]
            for kind, row in par["table"].items()]  # fmt: skip
    rows.append(["(n!)", *[math.factorial(int(c)) for c in cols]])
    return [
        f"## Connection parameters per layer vs n (C = {par['dim']})",
        "",
        "Learnable parameters of one connection (`hyperconn.connection_parameter_count`); `refused` = the kind "
        "rejects that n (residual: n = 1 only; kromhc: powers of two; mhc_lite: n ≤ 8, its projection has "
        "n! residual outputs per token).",
        "",
        md_table(["kind", *[f"n={c}" for c in cols]], rows),
        "",
        "![parameters vs n](connection_params_vs_n.png)",
        "",
    ]


def render(summary: dict, out: Path) -> list[str]:
    """Write the plots and ``report.md`` into ``out``; returns the figure files written."""
    out = Path(out)
    figures = write_plots(out, summary)
    atomic_write_text(out / "report.md", report_markdown(summary, figures))
    return figures
