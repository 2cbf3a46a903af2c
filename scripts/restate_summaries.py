"""Restate the committed study summaries under today's rules and re-render their reports.

The runs behind docs/results/ are not committed, only each study's ``summary.json``; this brings
every such summary to the current rules from the data it holds (``hyperconn.analysis.restate``:
layer averages without the connections skipped as inert, Δ vs the residual of the same axis
values, ``mdd_80`` from the noncentral t, today's verdict words, today's key names) and
re-renders ``report.md`` and the plots from it (``hyperconn.analysis.render``), as
``hyperconn compare --report-only`` would from the runs.

    python scripts/restate_summaries.py                      # every docs/results/study-*/ folder
    python scripts/restate_summaries.py docs/results/study-lr # some folders
    python scripts/restate_summaries.py --check               # exit 1 if any folder is not restated

Restating a summary that is already restated changes nothing (``--check`` tests that); the report
is re-rendered either way.
The superseded folders under docs/results/evidence-ii/ are kept as published.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hyperconn.analysis.render import render
from hyperconn.analysis.restate import restate
from hyperconn.fileio import write_json

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GLOB = ("docs/results/study-*/summary.json", "docs/results/study-*/*/summary.json")


def folders(given: list[str]) -> list[Path]:
    if given:
        return [Path(g) for g in given]
    found = {p.parent for pattern in DEFAULT_GLOB for p in ROOT.glob(pattern)}
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="study folders holding summary.json (default: docs/results/study-*)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a summary is not restated")
    args = parser.parse_args(argv)
    stale = []
    for folder in folders(args.folders):
        path = folder / "summary.json"
        summary = json.loads(path.read_text())
        restated = restate(summary)
        same = json.dumps(restated, sort_keys=True) == json.dumps(summary, sort_keys=True)
        if args.check:
            if not same:
                stale.append(folder)
            print(f"{folder}: {'restated' if same else 'not restated'}")
            continue
        if not same:
            write_json(path, restated, indent=2)
        render(restated, folder)
        print(f"{folder}: {'already restated' if same else 'restated'} ({'; '.join(restated['restated'])}); "
              "report re-rendered")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
