"""Interleaved timing and saved-activation accounting shared by the benchmarks.

The CPU this project is measured on is shared and noisy, so contenders are never timed one after
the other: every round runs each contender once (in a rotated order), and a contender's time is
the median over rounds. Results are quoted as ratios of medians taken in the same rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved_medians(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Run every contender ``warmup`` times, then ``repeats`` rounds of one call each.

    Returns ``{name: {"median_ms", "min_ms", "iqr_ms"}}``. The order inside a round rotates so
    that no contender always runs right after the same neighbour.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            samples[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0], ts[0], ts[0]]
        out[name] = {"median_ms": statistics.median(ts), "min_ms": min(ts), "iqr_ms": q[2] - q[0]}
    return out


def saved_activation_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct tensor storage autograd keeps for backward while ``fn()`` runs forward.

    Counted with ``saved_tensors_hooks`` (each storage once; parameters and the inputs the caller
    holds are included, so compare contenders on the same inputs). This is the activation memory
    a layer adds to a training step, the quantity ``recompute=True`` reduces; it does not depend
    on timing noise.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
