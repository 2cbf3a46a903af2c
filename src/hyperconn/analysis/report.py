"""One run's analysis written to disk: ``analysis.json``, ``analysis.md`` and PNG plots.

Plots: mean ``H_res`` heatmaps at the first, middle and last connection
(``h_res_heatmaps.png``), identity distance and negative mass per connection
(``per_layer.png``), and the depth composite's gains over depth (``composite_gain.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_text, write_json
from . import plots
from .capture import CaptureResult

DEFINITIONS = """\
Definitions (per token, then averaged over the captured validation tokens; `max` = worst token).
Convention: output stream j of a mix is `x'_j = sum_i H[i,j] x_i`.

- identity distance `||H - I||_F`; off-diagonal mass `sum_{i!=j} |H_ij| / n`;
- negative fraction: share of entries `< -1e-6`; negative mass `sum_ij max(-H_ij, 0) / n`;
- spectral norm `||H||_2`; subdominant spectrum: singular values of `P^T H P` (P the Helmert
  basis of the mean-free subspace); effective rank `exp(entropy(s / sum s))` of the singular values;
- row / column-sum error `max_i |sum_j H_ij - 1|` / `max_j |sum_i H_ij - 1|`;
- composite after l connections: the operator `A = (H^(1) ... H^(l))^T` with `x^(l) = A x^(0)`
  (column vectors of stream values); forward gain = max absolute row sum of A (`||A||_inf`),
  backward gain = max absolute column sum of A (`||A||_1`, the gain seen by gradients), `||A||_2`.
"""


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax != 0 and (ax >= 1e4 or ax < 10 ** (-digits)):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def layer_summary(result: CaptureResult) -> dict[str, dict[str, float]]:
    """Layer-averaged and worst-layer value of every scalar diagnostic, plus the final composite.

    ``worst`` is the max over layers of the per-layer mean, except for the spectral norm and the
    sum errors, where it is the max over layers of the per-token max. Only connections that learn
    an ``H_res`` count (a connection built without one, skipped as inert, is listed under
    ``skipped``); the composite covers every connection (``H_res = I`` for a skipped one).
    """
    layers = [layer for layer in result.layers if layer.mixes_streams]
    keys = list(result.layers[0].mean)
    out: dict = {"mean": {}, "worst": {}, "skipped": [la.name for la in result.layers if not la.mixes_streams]}
    if not layers:
        keys = []
    for key in keys:
        per_layer_mean = [layer.mean[key] for layer in layers]
        out["mean"][key] = float(np.mean(per_layer_mean))
        if key in ("spectral_norm", "row_sum_error", "column_sum_error"):
            out["worst"][key] = float(max(layer.max[key] for layer in layers))
        elif key == "effective_rank":
            out["worst"][key] = float(min(per_layer_mean))
        else:
            out["worst"][key] = float(max(per_layer_mean))
    comp = result.composite
    out["composite"] = {
        "forward_gain_mean": comp.forward_gain_mean[-1],
        "forward_gain_max": max(comp.forward_gain_max),
        "backward_gain_mean": comp.backward_gain_mean[-1],
        "backward_gain_max": max(comp.backward_gain_max),
        "spectral_norm_mean": comp.spectral_norm_mean[-1],
        "spectral_norm_max": max(comp.spectral_norm_max),
    }
    curves = [layer.sinkhorn_error_curve for layer in layers if layer.sinkhorn_error_curve is not None]
    if curves:
        out["sinkhorn_error_curve"] = np.mean(curves, axis=0).tolist()
        out["sinkhorn_iters"] = layers[0].sinkhorn_iters
    return out


def analysis_markdown(result: CaptureResult, title: str, info: dict[str, Any]) -> str:
    summary = layer_summary(result)
    lines = [f"# Analysis: {title}", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", DEFINITIONS, "## Per connection (mean over tokens; spectral norm and sum errors: max)", ""]
    rows = []
    for layer in result.layers:
        m, mx = layer.mean, layer.max
        if not layer.mixes_streams:
            rows.append([layer.index, layer.name, "no H_res (inert, skipped)", *["-"] * 8,
                         " ".join(fmt(v, 2) for v in layer.pre_mean), " ".join(fmt(v, 2) for v in layer.post_mean)])
            continue
        rows.append(
            [
                layer.index,
                layer.name,
                fmt(m["identity_distance"]),
                fmt(m["off_diagonal_mass"]),
                fmt(m["negative_fraction"], 3),
                fmt(m["negative_mass"]),
                fmt(mx["spectral_norm"]),
                " ".join(fmt(s, 3) for s in layer.subdominant_singular_values) or "-",
                fmt(m["effective_rank"], 3),
                fmt(mx["row_sum_error"], 2),
                fmt(mx["column_sum_error"], 2),
                " ".join(fmt(v, 2) for v in layer.pre_mean),
                " ".join(fmt(v, 2) for v in layer.post_mean),
            ]
        )
    header = [
        "#", "connection", "‖H−I‖_F", "off-diag", "neg frac", "neg mass", "‖H‖₂ max",
        "subdominant σ", "eff rank", "row err", "col err", "H_pre mean", "H_post mean",
    ]  # fmt: skip
    lines += [md_table(header, rows), ""]
    c = summary["composite"]
    lines += [
        "## Depth composite (all connections)",
        "",
        md_table(
            ["", "mean over tokens", "max over tokens and depth"],
            [
                ["forward gain", fmt(c["forward_gain_mean"]), fmt(c["forward_gain_max"])],
                ["backward gain", fmt(c["backward_gain_mean"]), fmt(c["backward_gain_max"])],
                ["‖A‖₂", fmt(c["spectral_norm_mean"]), fmt(c["spectral_norm_max"])],
            ],
        ),
        "",
    ]
    if "sinkhorn_error_curve" in summary:
        curve = summary["sinkhorn_error_curve"]
        picks = [k for k in (1, 2, 5, 10, 20, 30, 50) if k <= len(curve)]
        lines += [
            f"## Sinkhorn column-sum error vs iterations (mean over layers; configured: "
            f"{summary['sinkhorn_iters']})",
            "",
            md_table([f"k={k}" for k in picks], [[f"{curve[k - 1]:.2e}" for k in picks]]),
            "",
        ]
    lines += [
        "## Plots",
        "",
        "![mean H_res](h_res_heatmaps.png)",
        "",
        "![per layer](per_layer.png)",
        "",
        "![composite gain](composite_gain.png)",
        "",
    ]
    return "\n".join(lines)


def _value(x: float | None) -> float:
    """A per-layer value for a plot: NaN (a gap) for a connection without ``H_res``."""
    return float("nan") if x is None else x


def write_analysis(result: CaptureResult, out_dir: Path, title: str, info: dict[str, Any]) -> dict:
    """Write ``analysis.json``, ``analysis.md`` and the plots into ``out_dir``; return the JSON data."""
    out_dir = Path(out_dir)
    layers = result.layers
    learned = [i for i, la in enumerate(layers) if la.mixes_streams]
    picks = sorted({learned[0], learned[len(learned) // 2], learned[-1]}) if learned else []
    if picks:  # none when every connection was skipped (a one-layer model)
        plots.heatmaps(
            [(f"#{i} {layers[i].name}", np.array(layers[i].mean_res)) for i in picks],
            out_dir / "h_res_heatmaps.png",
            f"{title}: mean H_res",
        )
    plots.per_layer(
        {
            "identity distance ‖H−I‖_F": {title: [_value(la.mean["identity_distance"]) for la in layers]},
            "negative mass": {title: [_value(la.mean["negative_mass"]) for la in layers]},
        },
        out_dir / "per_layer.png",
    )
    comp = result.composite
    depth = np.arange(1, len(comp.forward_gain_mean) + 1)
    zero = np.zeros(len(depth))
    plots.curves_with_band(
        {
            "forward gain (mean)": (depth, np.array(comp.forward_gain_mean), zero),
            "forward gain (max)": (depth, np.array(comp.forward_gain_max), zero),
            "backward gain (mean)": (depth, np.array(comp.backward_gain_mean), zero),
            "backward gain (max)": (depth, np.array(comp.backward_gain_max), zero),
            "‖A‖₂ (mean)": (depth, np.array(comp.spectral_norm_mean), zero),
        },
        out_dir / "composite_gain.png",
        "connections composed",
        "gain",
        f"{title}: composite over depth",
        logy=True,
    )
    data = {"title": title, "info": info, "summary": layer_summary(result), **result.to_dict()}
    write_json(out_dir / "analysis.json", data, indent=2)
    atomic_write_text(out_dir / "analysis.md", analysis_markdown(result, title, info))
    return data
