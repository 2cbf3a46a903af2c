"""Layer-level A/B of the connections' stream-side training ops: one transformer Block, forward + backward.

Contenders, interleaved in one process on the same inputs (``hyperconn.bench.timing.interleaved_medians``):

- ``old``: the stream ops (``project_rms``, ``width_mix``, ``depth_add``) of ``--baseline-rev``'s
  ``src/hyperconn/connections/ops.py`` (a file importing only torch, loaded from git), called in
  the order the connections call them;
- ``slot``: this checkout's ``conn.width`` (the projection and the mixing sum their ``grad x``
  in one buffer, ``StreamGradSlot``), then an out-of-place ``depth_add``;
- ``new``: the connection as the library runs it (``conn(x, branch)``: the slot, and the depth
  step writing ``x'`` into the fresh mixing output in place);
- ``residual``: the same Block with ``kind="residual"`` (one stream), for the ratios.

Reports median ms per Block fwd+bwd and the ratios old/residual, new/residual, new/old. Run with
one torch thread under ``nice -n 19``; on a shared machine only the ratios within one run mean
anything::

    nice -n 19 .venv/bin/python benchmarks/fused_streams.py --presets tiny,small --kinds shc,mhc --rounds 7
"""

from __future__ import annotations

import argparse
import os
import types

import torch
from block_ab import build_block, finish, load_module_at

from hyperconn.bench.timing import interleaved_medians
from hyperconn.connections.streams import compute_dtype, float32_region
from hyperconn.model.layers import RotaryEmbedding
from hyperconn.model.presets import get_preset
from hyperconn.model.transformer import Block, _branch_input

OPS_PATH = "src/hyperconn/connections/ops.py"


def per_op(conn, x: torch.Tensor, branch, ops: types.ModuleType) -> torch.Tensor:
    """One connection through ``ops``' three stream operations (a CoefficientConnection kind)."""
    dt = compute_dtype(x)
    with float32_region(x):
        raw = ops.project_rms(x.reshape(*x.shape[:-2], -1), conn.folded_weight(dt), conn.eps)
        pre, res, post = conn.coefficient_math(raw * conn.gate_scale(dt) + conn.bias.to(dt))
    u, mixed = ops.width_mix(pre, res, x)
    return ops.depth_add(mixed, post, branch(u))


def slot_only(conn, x: torch.Tensor, branch, ops: types.ModuleType) -> torch.Tensor:
    """This checkout's width step (with the slot), then an out-of-place depth."""
    u, mixed, post = conn.width(x)
    return ops.depth_add(mixed, post, branch(u))


def block_step(block: Block, rope: RotaryEmbedding, x: torch.Tensor, ops: types.ModuleType | None, step=per_op):
    """Forward + backward of ``block`` on ``x`` through ``step(conn, x, branch, ops)`` for each
    connection; ``ops=None``: the connections' own forward."""

    def attn(u):
        return block.attn(_branch_input(block.attn_norm, u), rope, 0, None)

    def mlp(u):
        return block.mlp(_branch_input(block.mlp_norm, u))

    def run():
        y = block(x, rope) if ops is None else step(block.mlp_conn, step(block.attn_conn, x, attn, ops), mlp, ops)
        y.backward(grad)
        x.grad = None
        for p in block.parameters():
            p.grad = None

    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return run


def build(preset: str, kind: str, num_streams: int):
    """A Block at ``preset``'s training batch shape (``batch_size x seq_len`` tokens)."""
    training = get_preset(preset).training
    return build_block(preset, kind, num_streams, training["batch_size"], training["seq_len"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--kinds", default="shc,mhc")
    ap.add_argument("--num-streams", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline-rev", default="492c56e", help="git revision whose ops.py is the 'old' contender")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    old_ops = load_module_at(args.baseline_rev, OPS_PATH)
    from hyperconn.connections import ops as new_ops

    print(f"load average {os.getloadavg()}")
    rows = []
    for preset in args.presets.split(","):
        res_block, rope, res_x = build(preset, "residual", 1)
        for kind in args.kinds.split(","):
            block, rope, x = build(preset, kind, args.num_streams)
            contenders = {
                "old": block_step(block, rope, x, old_ops),
                "slot": block_step(block, rope, x, new_ops, slot_only),
                "new": block_step(block, rope, x, None),
                "residual": block_step(res_block, rope, res_x, None),
            }
            t = {k: v["median_ms"] for k, v in interleaved_medians(contenders, args.rounds, warmup=1).items()}
            row = {"preset": preset, "kind": kind, "n": args.num_streams, "rounds": args.rounds, **t}
            row.update(
                old_vs_residual=t["old"] / t["residual"],
                new_vs_residual=t["new"] / t["residual"],
                new_vs_old=t["new"] / t["old"],
                slot_vs_old=t["slot"] / t["old"],
            )
            rows.append(row)
            print(
                f"{preset:6s} {kind:5s} old {t['old']:8.1f}  slot {t['slot']:8.1f}  new {t['new']:8.1f}  "
                f"residual {t['residual']:8.1f} ms | old/res {row['old_vs_residual']:.3f}  "
                f"new/res {row['new_vs_residual']:.3f}  new/old {row['new_vs_old']:.3f}  "
                f"slot/old {row['slot_vs_old']:.3f}",
                flush=True,
            )
    finish(rows, args.json)


if __name__ == "__main__":
    main()
