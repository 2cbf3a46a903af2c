"""PNG plots of the diagnostics (matplotlib, no pyplot state: each plot is its own ``Figure``).

Every function writes one PNG atomically (``hyperconn.fileio.atomic_path``) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .._optional import require

matplotlib = require("matplotlib", "the analysis plots")
matplotlib.use("Agg")  # headless; set before any canvas is created

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..fileio import atomic_path  # noqa: E402

KIND_COLOURS = {
    "residual": "#7f7f7f",
    "hc": "#d62728",
    "mhc": "#1f77b4",
    "mhc_lite": "#17becf",
    "kromhc": "#9467bd",
    "shc": "#2ca02c",
}


def colour(kind: str) -> str | None:
    return KIND_COLOURS.get(kind)


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` through the package's one atomic writer."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def heatmaps(matrices: Sequence[tuple[str, np.ndarray]], path: Path, title: str = "") -> Path:
    """Mean ``H_res`` matrices side by side, entries annotated, colour centred on 0."""
    k = len(matrices)
    fig = Figure(figsize=(3.2 * k, 3.3))
    vmax = max(float(np.abs(m).max()) for _, m in matrices) or 1.0
    for i, (label, m) in enumerate(matrices):
        ax = fig.add_subplot(1, k, i + 1)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        n = m.shape[0]
        for r in range(n):
            for c in range(n):
                ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("output stream j")
        ax.set_ylabel("input stream i")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def per_layer(
    series: Mapping[str, Mapping[str, Sequence[float]]], path: Path, title: str = "", logy: bool = False
) -> Path:
    """One panel per metric; in each, one line per label (e.g. per kind) over connection index.

    ``series[metric][label] = values per connection``.
    """
    k = len(series)
    fig = Figure(figsize=(5 * k, 3.6))
    for i, (metric, lines) in enumerate(series.items()):
        ax = fig.add_subplot(1, k, i + 1)
        for label, values in lines.items():
            ax.plot(range(len(values)), values, marker="o", ms=3, label=label, color=colour(label))
        ax.set_xlabel("connection (depth order)")
        ax.set_title(metric, fontsize=10)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def curves_with_band(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
) -> Path:
    """``curves[label] = (x, mean, std)``: mean line with a ±std band."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for label, (x, mean, std) in curves.items():
        ax.plot(x, mean, label=label, color=colour(label), lw=1.4)
        if np.any(std > 0):
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=colour(label))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save(fig, path)
