"""Benchmark rows -> a fixed-width table on stdout and an atomically written JSON file."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..fileio import write_json

__all__ = ["format_table", "machine_description", "write_json"]  # write_json: the one in ``hyperconn.fileio``


def machine_description() -> dict:
    """What the numbers were measured on (CPU model, cores, torch threads, versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # the machine is shared: the load next to every number (1, 5, 15-minute averages)
        "loadavg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a plain table; a missing value prints as ``-``."""
    cells = [[_fmt(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
