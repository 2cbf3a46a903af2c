"""Block-level A/B of mHC's Sinkhorn: one transformer Block, forward + backward.

Contenders, interleaved in one process on the same inputs (``hyperconn.bench.timing.interleaved_medians``):

- ``old``: the mHC Block with ``sinkhorn_log`` from ``--baseline-rev``'s ``src/hyperconn/linalg.py``
  (a file importing only torch, loaded from git);
- ``new``: the same Block with this checkout's ``sinkhorn_log``;
- ``residual``: the Block with ``kind="residual"`` (one stream), for the ratios.

The Block sees ``--batch`` sequences of the preset's ``max_seq_len`` tokens (the shape of
``hyperconn bench step``). Reports median ms per Block fwd+bwd and the ratios old/residual,
new/residual, new/old; ``--sinkhorn-only`` times ``sinkhorn_log`` fwd+bwd alone on the
connection's logits layout instead. Run with one torch thread under ``nice``; on a shared
machine only the ratios within one run mean anything::

    nice -n 5 .venv/bin/python benchmarks/sinkhorn_ab.py --presets tiny,small --rounds 9
"""

from __future__ import annotations

import argparse
import os

import torch
from block_ab import build_block, finish, load_module_at

import hyperconn.connections.mhc as mhc_module
from hyperconn import linalg
from hyperconn.bench.timing import interleaved_medians
from hyperconn.model.layers import RotaryEmbedding
from hyperconn.model.presets import get_preset
from hyperconn.model.transformer import Block

LINALG_PATH = "src/hyperconn/linalg.py"


def block_step(block: Block, rope: RotaryEmbedding, x: torch.Tensor, sinkhorn=None):
    """Forward + backward of ``block`` on ``x``, its mHC connections calling ``sinkhorn``."""
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def run():
        if sinkhorn is not None:
            mhc_module.sinkhorn_log = sinkhorn
        block(x, rope).backward(grad)
        x.grad = None
        for p in block.parameters():
            p.grad = None

    return run


def sinkhorn_step(tokens: int, n: int, iters: int, sinkhorn):
    """``sinkhorn`` fwd + bwd alone on (tokens, n, n) logits sliced out of a (tokens, 2n + n^2)
    coefficient tensor, as the connection hands them over."""
    coef = torch.randn(tokens, 2 * n + n * n, generator=torch.Generator().manual_seed(3)).requires_grad_()
    grad = torch.randn(tokens, n, n, generator=torch.Generator().manual_seed(4))

    def run():
        sinkhorn(coef[:, 2 * n :].reshape(tokens, n, n), iters).backward(grad)
        coef.grad = None

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--num-streams", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="sequences of max_seq_len tokens (bench step's default)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--baseline-rev", default="36db4c7", help="git revision whose linalg.py is the 'old' contender")
    ap.add_argument("--sinkhorn-only", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    old = load_module_at(args.baseline_rev, LINALG_PATH).sinkhorn_log
    new = linalg.sinkhorn_log
    n = args.num_streams

    print(f"load average {os.getloadavg()}", flush=True)
    rows = []
    for preset in args.presets.split(","):
        if args.sinkhorn_only:
            tokens = args.batch * get_preset(preset).model.max_seq_len
            contenders = {name: sinkhorn_step(tokens, n, 20, f) for name, f in (("old", old), ("new", new))}
        else:
            res_block, rope, res_x = build_block(preset, "residual", 1, args.batch)
            block, rope, x = build_block(preset, "mhc", n, args.batch)
            contenders = {
                "old": block_step(block, rope, x, old),
                "new": block_step(block, rope, x, new),
                "residual": block_step(res_block, rope, res_x),
            }
        try:
            t = {k: v["median_ms"] for k, v in interleaved_medians(contenders, args.rounds, warmup=1).items()}
        finally:
            mhc_module.sinkhorn_log = new
        row = {"preset": preset, "n": n, "batch": args.batch, "rounds": args.rounds, **t}
        row["new_vs_old"] = t["new"] / t["old"]
        line = f"{preset:6s} mhc n={n} old {t['old']:8.2f}  new {t['new']:8.2f}"
        if "residual" in t:
            row.update(old_vs_residual=t["old"] / t["residual"], new_vs_residual=t["new"] / t["residual"])
            line += (
                f"  residual {t['residual']:8.2f} ms | old/res {row['old_vs_residual']:.3f}"
                f"  new/res {row['new_vs_residual']:.3f}"
            )
        rows.append(row)
        print(f"{line}  new/old {row['new_vs_old']:.3f}", flush=True)
    finish(rows, args.json)


if __name__ == "__main__":
    main()
