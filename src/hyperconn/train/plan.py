"""``hyperconn plan``: bytes per rank and communication per step of each parallel layout, computed
from a model's shape (its parameters counted on the meta device), not measured.

Assumptions (each an option of the command, shown under the table):

- fp32 master weights and gradients (4 bytes each per parameter) and AdamW's two fp32 moments
  (8 bytes), as ``hyperconn train`` keeps them; the streams in float32 (``model.stream_dtype``);
- activations of one micro-batch of ``--micro-batch`` sequences of ``--seq-len`` tokens per rank:
  per token and layer, the streams each of the 2 connections saves for backward (``2 n C`` values,
  4 bytes) plus the sublayers' own saved tensors, ``34 C`` bytes (bf16, Korthikanti et al. 2022
  without the attention-score term, which SDPA does not store); the head rank adds the logits
  (``V`` values at 2 + 4 bytes). Tensor parallelism divides the per-layer term by ``t``
  (sequence- and head-sharded) but each sublayer keeps its gathered input (``2 C`` values, 4 bytes,
  not divided) and every tp rank the gathered logits; GPipe keeps ``--grad-accum`` micro-batches
  in flight;
- communication: bytes each rank sends per optimizer step over ring collectives (all-reduce
  ``2 (g-1)/g X``, all-gather / reduce-scatter ``(g-1)/g X`` of a tensor of ``X`` bytes);
  DDP all-reduces the fp32 gradients once per step; FSDP2 all-gathers the weights for forward and
  backward and reduce-scatters the gradients on every micro-batch; TP all-gathers and
  reduce-scatters each sublayer's branch (fp32, forward and backward: 8 per layer), gathers the
  logits (bf16), all-reduces the replicated parameters' gradients over ``tp`` and everything over
  ``dp``; PP sends the ``(b, T, n, C)`` streams forward and their gradient backward per micro-batch
  and all-reduces its stage's gradients over ``dp``; TP x FSDP2 adds FSDP2's traffic over ``dp``
  on the tp rank's parameters and all-reduces the replicated gradient shards over ``tp``. A
  connection itself sends nothing under TP or PP: its per-token math runs on the local tokens;
  only its parameters' gradients are reduced.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..model import ConnectionConfig, LanguageModel, ModelConfig

SHAPES = {
    "qwen3-0.6b": dict(dim=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_dim=128, mlp_dim=3072,
                       vocab_size=151936, tie_embeddings=True),
    "7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128, mlp_dim=11008,
               vocab_size=32000, tie_embeddings=False),
}  # fmt: skip
TP_SHARDED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Counts:
    total: int  # every parameter once
    tp_sharded: int  # attention and MLP projections
    per_block: int
    ends_first: int  # embedding + expand
    ends_last: int  # readout + norm + head (0 extra when tied: counted with the embedding)


def count(shape: str, kind: str, n: int) -> tuple[ModelConfig, Counts]:
    import torch

    cfg = ModelConfig(**SHAPES[shape], max_seq_len=4096, connection=ConnectionConfig(kind, n))
    with torch.device("meta"):
        model = LanguageModel(cfg)
    seen, total, sharded, first, last = set(), 0, 0, 0, 0
    blocks = [0] * cfg.n_layers
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if name.split(".")[-2] in TP_SHARDED:
            sharded += p.numel()
        if name.startswith("blocks."):
            blocks[int(name.split(".")[1])] += p.numel()
        elif name.startswith(("embed", "expand")):
            first += p.numel()
        else:
            last += p.numel()
    return cfg, Counts(total, sharded, max(blocks), first, last)


def rows(shape: str, kind: str, n: int, gpus: int, tp: int, pp: int, seq: int, micro: int, accum: int) -> list[dict]:
    cfg, c = count(shape, kind, n)
    C, L, V = cfg.dim, cfg.n_layers, cfg.vocab_size
    tokens = micro * seq
    layer_act = tokens * (2 * n * C * 4 + 34 * C)
    logits = tokens * V * 6
    out = []

    def ring(g: int, x: float, reduce: bool = True) -> float:
        return (2 if reduce else 1) * (g - 1) / g * x if g > 1 else 0.0

    def row(layout, params, act, comm):
        out.append({"model": shape, "gpus": gpus, "layout": layout, "params": params, "weights": 4 * params,
                    "grads": 4 * params, "adamw": 8 * params, "activations": act, "comm": comm})  # fmt: skip

    row(f"DDP {gpus}", c.total, L * layer_act + logits, ring(gpus, 4 * c.total))
    row(f"FSDP2 {gpus}", c.total / gpus, L * layer_act + logits, accum * 3 * ring(gpus, 4 * c.total, False))
    if tp <= gpus and gpus % tp == 0:
        d = gpus // tp
        params = c.tp_sharded / tp + (c.total - c.tp_sharded)
        act = L * (layer_act / tp + tokens * 2 * C * 4) + logits
        branch = L * 8 * ring(tp, tokens * C * 4, False) + ring(tp, tokens * V * 2, False)
        comm = accum * branch + ring(tp, 4 * (c.total - c.tp_sharded)) + ring(d, 4 * params)
        row(f"TP {tp} x DP {d}", params, act, comm)
        if d > 1:  # FSDP2 over dp on top: the tp rank's parameters again split d ways
            fsdp_comm = accum * (branch + 3 * ring(d, 4 * params, False)) + ring(tp, 4 * (c.total - c.tp_sharded) / d)
            row(f"TP {tp} x FSDP2 {d}", params / d, act, fsdp_comm)
    if pp <= gpus and gpus % pp == 0 and L % pp == 0:
        d = gpus // pp
        stage = c.per_block * (L // pp)
        params = stage + max(c.ends_first, c.ends_last)
        act = accum * ((L // pp) * layer_act + logits)  # the last stage: its blocks and the logits
        boundary = tokens * n * C * 4
        row(f"PP {pp} x DP {d}", params, act, accum * 2 * boundary + ring(d, 4 * params))
    return out


def _size(x: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} B"


def table(all_rows: list[dict]) -> str:
    head = "| model | GPUs | layout | params/rank | weights | grads | AdamW | activations | sent/step |"
    lines = [head, "|" + "---|" * 9]
    for r in all_rows:
        lines.append(
            f"| {r['model']} | {r['gpus']} | {r['layout']} | {r['params'] / 1e6:,.1f} M | {_size(r['weights'])} | "
            f"{_size(r['grads'])} | {_size(r['adamw'])} | {_size(r['activations'])} | {_size(r['comm'])} |"
        )
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="bytes per rank and communication per step of each parallel layout, computed",
        description="Bytes per rank (weights, gradients, AdamW, activations) and bytes sent per optimizer step "
        "for DDP, FSDP2, TP x DP, TP x FSDP2 and PP x DP, computed from a model shape (assumptions: "
        "hyperconn.train.plan's docstring, docs/distributed.md).",
    )
    p.add_argument("--shapes", default="qwen3-0.6b,7b", help=f"comma-separated: {', '.join(SHAPES)}")
    p.add_argument("--gpus", default="8,64,512", help="comma-separated world sizes")
    p.add_argument("--kind", default="mhc", help="connection kind")
    p.add_argument("--num-streams", type=int, default=4)
    p.add_argument("--tp", type=int, default=8, help="tensor-parallel degree of the TP rows")
    p.add_argument("--pp", type=int, default=4, help="pipeline degree of the PP rows")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per rank per micro-batch")
    p.add_argument("--grad-accum", type=int, default=8, help="micro-batches per step (GPipe keeps them all)")
    p.set_defaults(func=_plan)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers >= 1, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option} must be comma-separated integers >= 1, got {text!r}")
    return values


def _plan(args) -> int:
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"--shapes: unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    gpus = _ints(args.gpus, "--gpus")
    for name in ("tp", "pp", "num_streams", "seq_len", "micro_batch", "grad_accum"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(args, name)}")
    all_rows = [
        r
        for s in shapes
        for g in gpus
        for r in rows(
            s, args.kind, args.num_streams, g, args.tp, args.pp, args.seq_len, args.micro_batch, args.grad_accum
        )  # fmt: skip
    ]
    print(table(all_rows))
    print(
        f"\nkind {args.kind}, n = {args.num_streams}; {args.micro_batch} x {args.seq_len} tokens per micro-batch, "
        f"{args.grad_accum} micro-batches per step; fp32 weights/grads, fp32 AdamW moments; computed by "
        "`hyperconn plan`, not measured",
        file=sys.stdout,
    )
    return 0
