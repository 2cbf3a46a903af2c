"""Print the headline ratios of the JSON files written by benchmarks/run_all.sh.

Usage: python benchmarks/summarize.py benchmarks/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hyperconn.bench.report import format_table

LAYER = ["n", "dim", "dtype", "mode", "contender", "median_ms", "x_floor", "speedup_vs_naive",
         "speedup_vs_pkg_mhc", "saved_mib"]
MODEL = ["preset", "contender", "precision", "median_ms", "tokens_per_s", "x_residual"]
CALL = ["contender", "n", "dim", "us_per_call", "iqr_us", "aten_ops"]


def main(folder: str) -> None:
    for path in sorted(Path(folder).glob("*.json")):
        payload = json.loads(path.read_text())
        machine = payload["machine"]
        print(f"\n## {path.name}  ({payload['date']}, {machine['cpu']}, {machine['cores']} cores, "
              f"{machine['torch_threads']} torch thread(s), torch {machine['torch']}, "
              f"load {machine.get('loadavg', '?')})")
        columns = {"layer": LAYER, "call": CALL}.get(payload["bench"], MODEL)
        print(format_table(payload["rows"], columns))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
