"""Batch-1 generation under ``torch.no_grad`` against ``torch.inference_mode`` (what ``generate`` uses).

``LanguageModel.generate`` runs under ``torch.inference_mode``; this times its undecorated body
(``generate.__wrapped__``) under each mode, ``hyperconn bench decode``'s model and prompt (tiny,
batch 1, greedy, fp32, one torch thread), every kind in ``--kinds`` and residual, in interleaved
rounds in one process. Pause other jobs first::

    python benchmarks/decode_grad_mode.py --kinds shc --rounds 15
"""

from __future__ import annotations

import argparse
import time

import torch
from block_ab import finish

from hyperconn.bench.model import ModelBenchConfig, build_model
from hyperconn.bench.timing import interleaved_medians
from hyperconn.model import LanguageModel

MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def contender(cfg: ModelBenchConfig, model: LanguageModel, mode: str):
    body = LanguageModel.generate.__wrapped__  # generate without its own inference_mode
    prompt = torch.randint(cfg.vocab_size, (1, cfg.prompt_len), generator=torch.Generator().manual_seed(cfg.seed))

    def run() -> None:
        with MODES[mode]():
            body(model, prompt, cfg.new_tokens, temperature=0.0)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--kinds", default="shc", help="comma-separated; residual is always timed")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = ModelBenchConfig(precision="fp32")
    kinds = ["residual", *[k for k in args.kinds.split(",") if k != "residual"]]
    models = {kind: build_model(cfg, args.preset, kind).eval() for kind in kinds}
    runs = {f"{kind}/{mode}": contender(cfg, models[kind], mode) for kind in kinds for mode in MODES}
    timings = interleaved_medians(runs, args.rounds, warmup=2)
    rows = []
    for name, t in timings.items():
        kind, mode = name.split("/")
        tok_s = cfg.new_tokens / t["median_ms"] * 1e3
        base = cfg.new_tokens / timings[f"residual/{mode}"]["median_ms"] * 1e3
        gain = timings[f"{kind}/no_grad"]["median_ms"] / t["median_ms"]
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows.append({"kind": kind, "mode": mode, **t, "tokens_per_s": tok_s, "x_residual": tok_s / base,
                     "x_no_grad": gain, "preset": args.preset, "new_tokens": cfg.new_tokens,
                     "torch": torch.__version__, "date": date})  # fmt: skip
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    finish(rows, args.json)


if __name__ == "__main__":
    main()
