"""The layer grid as a picture: milliseconds against ``n`` (one panel per ``C``), one line per kind.

Reads the rows of ``hyperconn bench layer`` (its JSON ``rows``) and draws one mode/dtype at a time.
matplotlib is the ``analysis`` extra; no pyplot state (each plot is its own ``Figure``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .._optional import require


def grid_series(rows: list[dict], mode: str, dtype: str) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """``{C: {contender: [(n, median_ms), ...] sorted by n}}`` for one mode and dtype."""
    series: dict[int, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        if row.get("bench") != "layer" or row["mode"] != mode or row["dtype"] != dtype:
            continue
        series.setdefault(row["dim"], {}).setdefault(row["contender"], []).append((row["n"], row["median_ms"]))
    if not series:
        found = sorted({(r.get("mode"), r.get("dtype")) for r in rows})
        raise ValueError(f"no layer rows with mode={mode!r} and dtype={dtype!r}; the rows have {found}")
    for per_dim in series.values():
        for points in per_dim.values():
            points.sort()
    return series


def plot_layer_grid(rows: list[dict], path: str | os.PathLike, mode: str = "eager", dtype: str = "fp32",
                    title: str = "") -> Path:
    """Write a PNG of layer time (log scale) against n, one panel per C. Returns the path."""
    matplotlib = require("matplotlib", "the benchmark plots")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    series = grid_series(rows, mode, dtype)
    dims = sorted(series)
    cols = min(len(dims), 2)
    nrows = math.ceil(len(dims) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, dim in zip(axes, dims, strict=False):
        for name, points in sorted(series[dim].items()):
            ns, ms = zip(*points, strict=True)
            style = dict(ls="--", color="black") if name == "floor" else dict(marker="o")
            ax.plot(ns, ms, label=name, **style)
        ax.set_yscale("log")
        ax.set_xticks(sorted({n for pts in series[dim].values() for n, _ in pts}))
        ax.set_xlabel("streams n")
        ax.set_ylabel("forward+backward, ms (median)")
        ax.set_title(f"C = {dim}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(dims):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
