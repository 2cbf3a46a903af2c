"""Re-analyse a published study's summary.json with the current statistics: paired differences,
p-values, Holm over the study's pairs, the minimum detectable difference at 80% power and the
verdict words, as a Markdown table per study.

    python scripts/holm_reanalysis.py docs/results/evidence-ii/study-main/summary.json \
        docs/results/evidence-ii/study-pycode/summary.json

Reads only ``groups[*].val_loss_by_seed`` (each run's final validation loss), so it works on
summaries written before Holm was part of the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hyperconn.analysis.stats import adjust_pairs, paired_difference


def pairs_of(summary: dict) -> list[dict]:
    groups = summary["groups"]
    order = list(groups)
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            by_seed = {g: {int(k): v for k, v in groups[g]["val_loss_by_seed"].items()} for g in (a, b)}
            pairs.append({"a": a, "b": b, **paired_difference(by_seed[a], by_seed[b])})
    return adjust_pairs(pairs)


def table(pairs: list[dict]) -> str:
    lines = ["| a − b | mean | 95% CI | p | p (Holm) | mdd_80 | verdict |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        lines.append(
            f"| {p['a']} − {p['b']} | {p['mean']:+.4f} | [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | "
            f"{p['p']:.3f} | {p['p_holm']:.3f} | {p['mdd_80']:.4f} | {p['verdict']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="summary.json files of published studies")
    for path in parser.parse_args().summaries:
        pairs = pairs_of(json.loads(path.read_text()))
        print(f"#### {path.parent.name}: {len(pairs)} pairs\n\n{table(pairs)}\n")


if __name__ == "__main__":
    main()
