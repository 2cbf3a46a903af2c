"""Accumulate diagnostics of every hyper-connection's mixing matrices over batches.

The calls are recorded by :class:`hyperconn.diagnostics.MixingRecorder` (forward-pre-hooks, public
``mixing`` API) and measured with :mod:`hyperconn.diagnostics.metrics`.

:func:`capture_statistics` runs batches through a model and returns one :class:`LayerStats`
per connection call, in the order the connections were applied (depth order), plus the
statistics of the depth composite (:class:`CompositeStats`).

A connection built without ``H_res`` (``conn.mixes_streams`` False: the inert first / last
connection the model skips) has no learned mixing matrix: its ``H_res`` statistics are ``None``
(``LayerStats.mixes_streams`` False), not those of the identity; its ``H_pre`` / ``H_post``
statistics are reported as usual, and the depth composite uses ``H_res = I`` for it, the
operator it applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..connections import HyperConnection
from ..connections.invariants import closure, violations
from ..diagnostics import metrics as dg
from ..diagnostics.recorder import Call, MixingRecorder

SINKHORN_CURVE_ITERS = 50
SINKHORN_CURVE_TOKENS = 256  # tokens per batch and layer used for the (costly) Sinkhorn curve

# per-token scalar diagnostics accumulated per layer (mean and max over tokens)
SCALAR_METRICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity_distance": dg.identity_distance,
    "off_diagonal_mass": dg.off_diagonal_mass,
    "negative_fraction": dg.negative_fraction,
    "negative_mass": dg.negative_mass,
    "spectral_norm": dg.spectral_norm,
    "effective_rank": dg.effective_rank,
    "row_sum_error": dg.row_sum_error,
    "column_sum_error": dg.column_sum_error,
}


class _Running:
    """Running sum / max / count of a tensor-valued statistic over tokens."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.sq: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        """``values`` of shape ``(N, ...)``: N token-level samples."""
        s, q, m = values.sum(0), (values * values).sum(0), values.amax(0)
        if self.sum is None:
            self.sum, self.sq, self.max = s, q, m
        else:
            self.sum, self.sq, self.max = self.sum + s, self.sq + q, torch.maximum(self.max, m)
        self.count += values.shape[0]

    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    def std(self) -> torch.Tensor:
        mean = self.mean()
        return (self.sq / self.count - mean * mean).clamp_min(0).sqrt()


@dataclass
class LayerStats:
    """Diagnostics of one connection, averaged over captured tokens (``max_*`` = worst token).

    ``mixes_streams`` False: the connection has no ``H_res`` (skipped as inert); then every value
    in ``mean`` and ``max``, ``subdominant_singular_values`` and ``mean_res`` are ``None``."""

    index: int
    name: str
    kind: str
    layer_index: int
    num_streams: int
    tokens: int
    mean: dict[str, float | None]  # SCALAR_METRICS, mean over tokens
    max: dict[str, float | None]  # SCALAR_METRICS, max over tokens
    subdominant_singular_values: list[float] | None  # mean over tokens, descending
    mean_res: list[list[float]] | None  # mean H_res
    pre_mean: list[float]
    pre_std: list[float]
    post_mean: list[float]
    post_std: list[float]
    sinkhorn_iters: int | None = None
    sinkhorn_error_curve: list[float] | None = None  # k = 1..50, mHC only
    mixes_streams: bool = True
    # worst violation over tokens of every invariant the kind declares (and those they imply),
    # hyperconn.connections.invariants; None without H_res
    invariants: dict[str, float] | None = None


@dataclass
class CompositeStats:
    """Gains of the depth composite after the first ``l`` connections, ``l = 1..L`` (per-token)."""

    forward_gain_mean: list[float] = field(default_factory=list)
    forward_gain_max: list[float] = field(default_factory=list)
    backward_gain_mean: list[float] = field(default_factory=list)
    backward_gain_max: list[float] = field(default_factory=list)
    spectral_norm_mean: list[float] = field(default_factory=list)
    spectral_norm_max: list[float] = field(default_factory=list)


@dataclass
class CaptureResult:
    layers: list[LayerStats]
    composite: CompositeStats

    def to_dict(self) -> dict:
        return {"layers": [asdict(layer) for layer in self.layers], "composite": asdict(self.composite)}


class _LayerAccumulator:
    def __init__(self, index: int, name: str, conn: HyperConnection) -> None:
        self.index, self.name, self.conn = index, name, conn
        self.scalars = {key: _Running() for key in SCALAR_METRICS}
        self.subdominant = _Running()
        self.res = _Running()
        self.pre = _Running()
        self.post = _Running()
        self.sinkhorn_sum: torch.Tensor | None = None
        self.sinkhorn_batches = 0
        self.declared = closure(getattr(conn, "invariants", ()))  # a foreign connection declares none
        self.violations = {name: _Running() for name in self.declared}

    def add(self, call: Call) -> None:
        if getattr(self.conn, "mixes_streams", True):
            for key, fn in SCALAR_METRICS.items():
                self.scalars[key].add(fn(call.res))
            self.subdominant.add(dg.subdominant_singular_values(call.res))
            self.res.add(call.res)
            for name, values in violations(self.declared, call.res).items():
                self.violations[name].add(values.reshape(-1))
        self.pre.add(call.pre)
        self.post.add(call.post)
        if call.logits is not None:
            curve = dg.sinkhorn_error_curve(call.logits[:SINKHORN_CURVE_TOKENS], SINKHORN_CURVE_ITERS)
            self.sinkhorn_sum = curve if self.sinkhorn_sum is None else self.sinkhorn_sum + curve
            self.sinkhorn_batches += 1

    def result(self) -> LayerStats:
        conn = self.conn
        curve = None if self.sinkhorn_sum is None else (self.sinkhorn_sum / self.sinkhorn_batches).tolist()
        mixes = getattr(conn, "mixes_streams", True)  # a foreign connection (DeepSeek-V4) always mixes
        return LayerStats(
            index=self.index,
            name=self.name,
            kind=conn.kind,
            layer_index=conn.layer_index,
            num_streams=conn.num_streams,
            tokens=self.pre.count,
            mean={k: float(r.mean()) if mixes else None for k, r in self.scalars.items()},
            max={k: float(r.max) if mixes else None for k, r in self.scalars.items()},
            subdominant_singular_values=self.subdominant.mean().tolist() if mixes else None,
            mean_res=self.res.mean().tolist() if mixes else None,
            pre_mean=self.pre.mean().tolist(),
            pre_std=self.pre.std().tolist(),
            post_mean=self.post.mean().tolist(),
            post_std=self.post.std().tolist(),
            sinkhorn_iters=getattr(conn, "sinkhorn_iters", None) if conn.kind == "mhc" else None,
            sinkhorn_error_curve=curve,
            mixes_streams=mixes,
            invariants={k: float(r.max) for k, r in self.violations.items()} if mixes else None,
        )


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(batch)``, or ``model(batch[0])`` for an ``(inputs, targets)`` pair."""
    if isinstance(batch, tuple | list):
        batch = batch[0]
    return model(batch)


def capture_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[nn.Module, Any], Any] = default_forward,
) -> CaptureResult:
    """Run ``forward(model, batch)`` for every batch under ``no_grad`` and accumulate diagnostics.

    Returns one :class:`LayerStats` per connection call, in the order the calls happened in a
    forward pass (depth order), and the composite's gains over depth, computed per token from
    the per-token matrices of every connection. Every batch must call the same connections in
    the same order.
    """
    layers: list[_LayerAccumulator] = []
    comp = [_Running() for _ in range(3)]  # forward, backward, spectral; each (N, L)
    order: list[str] | None = None
    was_training = model.training
    model.eval()
    try:
        with MixingRecorder(model) as recorder, torch.no_grad():
            for batch in batches:
                forward(model, batch)
                calls = recorder.pop()
                names = [c.name for c in calls]
                if order is None:
                    if not calls:
                        raise ValueError("the forward pass called no HyperConnection")
                    order = names
                    layers = [_LayerAccumulator(i, c.name, c.module) for i, c in enumerate(calls)]
                elif names != order:
                    raise ValueError("batches called different connections (or in another order)")
                for acc, call in zip(layers, calls, strict=True):
                    acc.add(call)
                prefixes = dg.prefix_composites([c.res for c in calls])
                stacked = torch.stack(prefixes, dim=1)  # (N, L, n, n)
                comp[0].add(dg.forward_gain(stacked))
                comp[1].add(dg.backward_gain(stacked))
                comp[2].add(dg.spectral_norm(stacked))
    finally:
        model.train(was_training)
    if order is None:
        raise ValueError("capture_statistics: no batches")
    composite = CompositeStats(
        forward_gain_mean=comp[0].mean().tolist(),
        forward_gain_max=comp[0].max.tolist(),
        backward_gain_mean=comp[1].mean().tolist(),
        backward_gain_max=comp[1].max.tolist(),
        spectral_norm_mean=comp[2].mean().tolist(),
        spectral_norm_max=comp[2].max.tolist(),
    )
    return CaptureResult([acc.result() for acc in layers], composite)
