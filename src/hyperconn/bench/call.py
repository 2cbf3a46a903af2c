"""The per-call decode benchmark: one connection on one token, no gradients.

Batch-1 generation calls every connection once per token per sublayer on a ``(1, 1, n, C)``
streams tensor, so the cost is dispatch (one ATen op costs microseconds whatever its size), not
data. This benchmark isolates that cost for every kind: ``conn(x, identity)`` in eval mode under
``torch.no_grad``, timed as ``calls`` back-to-back calls per round over interleaved rounds, plus
the number of ATen kernels one call dispatches (counted with a ``TorchDispatchMode``, i.e. after
composite ops are decomposed: what actually runs). ``residual`` runs at ``n = 1`` for scale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..connections import available_connections, make_connection
from .layer import supports
from .timing import interleaved_medians


@dataclass
class CallBenchConfig:
    kinds: tuple[str, ...] = available_connections()
    num_streams: int = 4
    dim: int = 256  # the ``tiny`` preset's width
    tokens: int = 1  # batch 1, one new token: the decode step's shape
    calls: int = 200  # calls per timed round (one call is far below the timer's resolution)
    repeats: int = 15
    warmup: int = 1
    seed: int = 0

    def validate(self) -> CallBenchConfig:
        unknown = sorted(set(self.kinds) - set(available_connections()))
        if unknown:
            raise ValueError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(available_connections())}")
        for name in ("num_streams", "dim", "tokens", "calls", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


class _OpCounter(TorchDispatchMode):
    """Counts every ATen op dispatched while active (views and copies included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def count_aten_ops(fn: Callable[[], object]) -> Counter[str]:
    """``{op name: calls}`` of the ATen ops ``fn()`` dispatches (run once, after a warm-up call)."""
    fn()
    counter = _OpCounter()
    with counter:
        fn()
    return counter.ops


def _identity(u: torch.Tensor) -> torch.Tensor:
    return u


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return module


def call_contender(kind: str, n: int, cfg: CallBenchConfig) -> tuple[Callable[[], None], Callable[[], object]]:
    """``(timed round of cfg.calls calls, one call)`` for ``kind`` at ``n`` streams."""
    conn = _perturb(make_connection(kind, n, cfg.dim), cfg.seed).eval()
    x = torch.randn(1, cfg.tokens, n, cfg.dim, generator=torch.Generator().manual_seed(cfg.seed))

    def one() -> object:
        return conn(x, _identity)

    def round_() -> None:
        for _ in range(cfg.calls):
            conn(x, _identity)

    return round_, one


def run_call_bench(cfg: CallBenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    cfg.validate()
    built: dict[str, tuple[Callable, Callable]] = {}
    for kind in cfg.kinds:
        n = 1 if kind == "residual" else cfg.num_streams
        if kind != "residual" and not supports(kind, n):
            log(f"call: {kind} does not take n={n}; skipped")
            continue
        built[kind] = call_contender(kind, n, cfg)
    log(f"call: {len(built)} kinds x {cfg.repeats} rounds of {cfg.calls} calls, n={cfg.num_streams} C={cfg.dim}")
    with torch.no_grad():
        ops = {name: count_aten_ops(pair[1]) for name, pair in built.items()}
        timings = interleaved_medians({name: pair[0] for name, pair in built.items()}, cfg.repeats, cfg.warmup)
    rows = []
    for name, t in timings.items():
        rows.append(
            dict(
                bench="call", contender=name, n=1 if name == "residual" else cfg.num_streams, dim=cfg.dim,
                tokens=cfg.tokens, us_per_call=t["median_ms"] * 1e3 / cfg.calls,
                iqr_us=t["iqr_ms"] * 1e3 / cfg.calls, aten_ops=sum(ops[name].values()),
                top_ops=", ".join(f"{op} {c}" for op, c in ops[name].most_common(6)),
            )
        )
    return rows


def config_dict(cfg: CallBenchConfig) -> dict:
    return asdict(cfg)
