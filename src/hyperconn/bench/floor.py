"""The floor beside a training-step measurement: the extra FLOPs and bytes a model's
hyper-connections must spend over the residual stream, and the time they imply on this machine.

Per connection, ``T`` tokens, ``n`` streams of width ``C``, ``b`` bytes per stream element and a
coefficient projection of ``R`` rows, ``F`` features and ``K`` columns (``R = T, F = n C`` for the
flattened kinds; ``R = T n, F = C`` for hc's per-stream norm), counted once per pass over memory::

    projection  fwd  2 R F K flops (+ 2 R F for the RMS statistics),  reads x: T n C b
                bwd  4 R F K flops (dX and dW),                       reads x, read-writes dX: 3 T n C b
    width mix   fwd  u = H_pre x: 2 T n C; mixed = H_res^T x: 2 T n^2 C;  reads x, writes u, mixed
                bwd  the transposes and the coefficient gradients: 4 T n C + 4 T n^2 C;
                     reads x, d_mixed, d_u, writes dX
    depth add   fwd  x' = mixed + H_post F(u): 2 T n C;  reads mixed, F(u), writes x'
                bwd  dF = sum_j H_post_j g_j, dH_post = g . F(u): 4 T n C;  reads g, F(u), writes dF
    optimizer   the connection's P parameters through clipping and AdamW: 32 P bytes

A connection without ``H_res`` (``mix_streams=False``) has ``mixed = x``: its width step is
``u = H_pre x`` alone (no ``n x n`` mix, nothing written but ``u``) and its projection has only the
``2 n`` pre and post columns. The residual connection costs ``x' = x + F(u)``: ``T C`` flops and
``3 T C b`` bytes forward, the same backward; the model's ends (expand, readout) add one pass over
``T n C`` each way. The per-token coefficient math (Sinkhorn, Cayley, ...) is left out: it is
``O(T n^2)``, negligible in both FLOPs and bytes.

The floor of an op is ``max(bytes / copy bandwidth, flops / GEMM rate)``, both measured in the
bench process (:func:`measure_machine`); the contender's floor is the sum over its ops.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import torch

from ..connections.base import CoefficientConnection, HyperConnection
from ..connections.hc import HC
from ..connections.residual import Residual


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved of one op (or a sum of ops)."""

    flops: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.flops - other.flops, self.bytes - other.bytes)

    def floor_s(self, copy_bytes_per_s: float, gemm_flops_per_s: float) -> float:
        return max(self.bytes / copy_bytes_per_s, self.flops / gemm_flops_per_s)


def projection_shape(conn: HyperConnection, tokens: int) -> tuple[int, int, int]:
    """``(R, F, K)`` of the coefficient projection; ``(0, 0, 0)`` for the residual connection."""
    n, c = conn.num_streams, conn.dim
    if isinstance(conn, CoefficientConnection):
        return tokens, n * c, sum(conn.group_sizes)
    if isinstance(conn, HC):
        return tokens * n, c, n + 2
    if isinstance(conn, Residual):
        return 0, 0, 0
    raise ValueError(f"no cost model for connection kind {conn.kind!r} ({type(conn).__name__})")


def connection_ops(conn: HyperConnection, tokens: int, elem_bytes: int) -> dict[str, Cost]:
    """Forward + backward cost of one connection, by op (see the module docstring)."""
    if isinstance(conn, Residual):
        return {"depth": Cost(2 * tokens * conn.dim, 6 * tokens * conn.dim * elem_bytes)}
    params = sum(p.numel() for p in conn.parameters())
    shape = projection_shape(conn, tokens)
    return _ops(tokens, conn.num_streams, conn.dim, elem_bytes, shape, conn.mixes_streams, params)


def _ops(T: int, n: int, c: int, b: int, shape: tuple[int, int, int], mixes: bool, params: int) -> dict[str, Cost]:
    R, F, K = shape
    stream = T * n * c
    ops = {"projection": Cost(6 * R * F * K + 2 * R * F, 4 * stream * b)}
    if mixes:
        ops["width"] = Cost(6 * stream + 6 * stream * n, (2 * stream + T * c) * b + (3 * stream + T * c) * b)
    else:
        ops["width"] = Cost(6 * stream, (stream + T * c) * b + (3 * stream + T * c) * b)
    ops["depth"] = Cost(6 * stream, (2 * stream + T * c) * b + (stream + 2 * T * c) * b)
    ops["optimizer"] = Cost(0, 32 * params)
    return ops


def _mixing_twin_cost(conn: CoefficientConnection, tokens: int, elem_bytes: int) -> Cost:
    """What ``conn`` (built without ``H_res``) would cost with it: its ``res_groups`` columns and
    their gates and biases added, and the ``n x n`` mix."""
    groups = conn.res_groups()
    R, F, K = projection_shape(conn, tokens)
    params = sum(p.numel() for p in conn.parameters()) + (F + 1) * sum(groups) + len(groups)
    ops = _ops(tokens, conn.num_streams, conn.dim, elem_bytes, (R, F, K + sum(groups)), True, params)
    return sum(ops.values(), Cost())


def _skippable(conn: HyperConnection) -> bool:
    """Whether ``conn``'s kind has ``H_res`` and so a twin with it (``mix_streams`` option)."""
    return "mix_streams" in inspect.signature(type(conn).__init__).parameters


@dataclass(frozen=True)
class StepCost:
    """A model's connection cost over the residual model's, for one training step."""

    extra: Cost
    connections: int
    skipped: int  # connections built without H_res
    saved: Cost  # what the skipped connections do not spend, vs the same connection with H_res
    floor_s: float | None = None  # sum over ops of Cost.floor_s, when the rates were given


def model_step_cost(
    model: torch.nn.Module,
    tokens: int,
    elem_bytes: int = 4,
    copy_bytes_per_s: float | None = None,
    gemm_flops_per_s: float | None = None,
) -> StepCost:
    """Sum :func:`connection_ops` over ``model.connections()``, minus the residual model's, plus the
    model's ends (``T n C`` each way for expand and readout when ``n > 1``). With both rates, also
    the floor: every op's :meth:`Cost.floor_s`, summed, minus the residual model's."""
    rated = copy_bytes_per_s is not None and gemm_flops_per_s is not None

    def floor(ops) -> float:
        return sum(op.floor_s(copy_bytes_per_s, gemm_flops_per_s) for op in ops) if rated else 0.0

    conns = model.connections()
    total, saved, skipped, floor_s = Cost(), Cost(), 0, 0.0
    for conn in conns:
        ops = connection_ops(conn, tokens, elem_bytes).values()
        base = connection_ops(Residual(1, conn.dim), tokens, elem_bytes).values()
        cost = sum(ops, Cost())
        total = total + cost - sum(base, Cost())
        floor_s += floor(ops) - floor(base)
        if not conn.mixes_streams and _skippable(conn):  # an inert end (not a kind without H_res)
            skipped += 1
            saved = saved + (_mixing_twin_cost(conn, tokens, elem_bytes) - cost)
    n, c = conns[0].num_streams, conns[0].dim
    if n > 1:
        ends = Cost(2 * tokens * n * c, 4 * tokens * (n + 1) * c * elem_bytes)
        total = total + ends
        floor_s += floor([ends])
    return StepCost(total, len(conns), skipped, saved, floor_s if rated else None)


def _best_s(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_copy_bandwidth(copy_mib: int = 64, repeats: int = 5) -> float:
    """Bytes read + written per second by a ``copy_mib`` MiB float32 tensor copy, the best of
    ``repeats`` (a floor wants the machine's best, not its median)."""
    src = torch.randn(copy_mib * 2**18)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_s(lambda: dst.copy_(src), repeats)


def measure_gemm_rate(shape: tuple[int, int, int], repeats: int = 5) -> float:
    """FLOP/s of the float32 GEMM ``(R, F) @ (F, K)``, the best of ``repeats``."""
    R, F, K = (max(1, v) for v in shape)
    a, w = torch.randn(R, F), torch.randn(F, K)
    return 2 * R * F * K / _best_s(lambda: a @ w, repeats)
