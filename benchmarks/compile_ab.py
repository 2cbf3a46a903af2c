"""Whole-model against regional compilation of one training step: cold compile time and step time.

Contenders (``hyperconn bench step``'s model and batch: a preset, ``--batch`` sequences of its
``max_seq_len`` tokens, fp32, AdamW, the trainer's ``train_step``):

- ``eager``: the model as built;
- ``whole``: ``torch.compile(model)``, what ``train.compile=true`` did before regional compile;
- ``regional``: ``hyperconn.model.compile.compile_blocks(model)``, each block compiled in place
  (one graph per distinct block), what ``train.compile=true`` does now.

``--cold``: each compiled mode's first step in a fresh process with an empty Inductor cache
(``TORCHINDUCTOR_CACHE_DIR``), so the time is a cold compile. Otherwise: every mode in one
process (first steps printed, warm cache or not), then ``--rounds`` interleaved steps
(``hyperconn.bench.timing.interleaved_medians``). One torch thread; pause other jobs for the
step times::

    python benchmarks/compile_ab.py --preset small --kind shc --cold
    python benchmarks/compile_ab.py --preset small --kind shc --rounds 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from block_ab import finish

from hyperconn.bench.model import ModelBenchConfig, build_model, training_step
from hyperconn.bench.timing import interleaved_medians
from hyperconn.model.compile import compile_blocks

MODES = ("eager", "whole", "regional")


def contender(preset: str, kind: str, batch: int, mode: str):
    cfg = ModelBenchConfig(precision="fp32", batch_size=batch)
    model = build_model(cfg, preset, kind)
    if mode == "regional":
        compile_blocks(model)
    return training_step(cfg, model, torch.compile(model) if mode == "whole" else model)


def first_step_s(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--kind", default="shc")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--cold", action="store_true", help="first step of each compiled mode, fresh process and cache")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one cold child
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.mode:  # the child of --cold
        print(f"{first_step_s(contender(args.preset, args.kind, args.batch, args.mode)):.1f}")
        return
    rows = []
    if args.cold:
        for mode in ("whole", "regional"):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                cmd = [sys.executable, __file__, "--preset", args.preset, "--kind", args.kind,
                       "--batch", str(args.batch), "--mode", mode]  # fmt: skip
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rows.append({"mode": mode, "cold_first_step_s": float(out.split()[-1])})
            print(rows[-1], flush=True)
    else:
        steps = {mode: contender(args.preset, args.kind, args.batch, mode) for mode in MODES}
        for mode, step in steps.items():
            print(f"{mode}: first step {first_step_s(step):.1f} s", flush=True)
        print(f"load average before the rounds {os.getloadavg()}")
        timings = interleaved_medians(steps, args.rounds, warmup=1)
        for mode, t in timings.items():
            rows.append({"mode": mode, **t, "x_whole": t["median_ms"] / timings["whole"]["median_ms"]})
            print(rows[-1])
    run = {
        "preset": args.preset, "kind": args.kind, "batch": args.batch, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average_after": os.getloadavg(),
    }  # fmt: skip
    finish([{**run, **r} for r in rows], args.json)


if __name__ == "__main__":
    main()
