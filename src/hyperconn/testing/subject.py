"""The kind under test: its class, stream count and options, and how the checks build it,
perturb it, feed it and measure it."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import torch

from ..connections.base import HyperConnection
from ..connections.registry import connection_class

# tried in this order when num_streams is not given: the first the class accepts
STREAM_COUNTS = (4, 3, 2, 8, 1)
LAYER_INDEX = 1  # not 0: a kind that ignores layer_index at init still builds the same module


def resolve(cls_or_kind) -> type[HyperConnection]:
    """A connection class from a class or a kind name / import path (:func:`connection_class`)."""
    if isinstance(cls_or_kind, str):
        return connection_class(cls_or_kind)
    if not (isinstance(cls_or_kind, type) and issubclass(cls_or_kind, HyperConnection)):
        raise TypeError(f"check_connection takes a HyperConnection subclass or a kind name, got {cls_or_kind!r}")
    return cls_or_kind


def accepts_option(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` takes the keyword ``name``."""
    params = inspect.signature(cls.__init__).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def default_num_streams(cls: type[HyperConnection], dim: int, options: dict) -> int:
    """The first of :data:`STREAM_COUNTS` that ``cls`` can be built with (on the meta device)."""
    errors = []
    for n in STREAM_COUNTS:
        try:
            with torch.device("meta"):
                cls(n, dim, layer_index=LAYER_INDEX, **options)
        except Exception as err:  # noqa: BLE001 (any refusal means: try the next count)
            errors.append(f"n={n}: {type(err).__name__}: {err}")
            continue
        return n
    raise ValueError(f"{cls.__qualname__} accepts none of num_streams {STREAM_COUNTS}: " + "; ".join(errors))


@torch.no_grad()
def perturb(module: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """``p += scale * N(0, 1)`` for every floating parameter, from one generator seeded with
    ``seed`` (the kinds start near trivial values, which hide wrong mixing)."""
    generator = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        if p.is_floating_point():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.add_((scale * noise).to(p.dtype))
    return module


@dataclass
class Subject:
    """One kind at one size: builds its modules and the inputs of every check."""

    cls: type[HyperConnection]
    num_streams: int
    dim: int
    options: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def kind(self) -> str:
        return getattr(self.cls, "kind", "") or self.cls.__qualname__

    def build(self, dtype: torch.dtype | None = torch.float64, scale: float | None = 0.5, seed_offset: int = 0,
              **options) -> HyperConnection:
        """A module of the kind in ``dtype``, its parameters perturbed by ``scale`` (``None``: as
        initialised). ``options`` override the subject's."""
        with torch.random.fork_rng(devices=[]):  # a kind that draws its init at random builds the same one
            torch.manual_seed(self.seed)
            module = self.cls(self.num_streams, self.dim, layer_index=LAYER_INDEX, **{**self.options, **options})
        if dtype is not None:
            module = module.to(dtype)
        if scale is not None:
            perturb(module, scale, self.seed + 1 + seed_offset)
        return module

    def streams(self, *lead: int, dtype: torch.dtype = torch.float64, seed_offset: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 1000 + seed_offset)
        x = torch.randn(*lead, self.num_streams, self.dim, generator=generator, dtype=torch.float64)
        return x.to(dtype)

    def branch(self, dtype: torch.dtype = torch.float64):
        """``F(u) = tanh(a * u + 0.5 roll(u)) + b`` per channel (fixed ``a``, ``b``), computed in
        ``dtype`` and returned in ``u``'s dtype: it mixes channels, is smooth for gradcheck, and
        runs in ``dtype`` under autocast (elementwise ops and ``roll`` are not autocast)."""
        generator = torch.Generator().manual_seed(self.seed + 2000)
        ab = torch.randn(2, self.dim, generator=generator, dtype=torch.float64).to(dtype)

        def branch(u: torch.Tensor) -> torch.Tensor:
            v = u.to(dtype)
            return (torch.tanh(ab[0] * v + 0.5 * v.roll(1, dims=-1)) + ab[1]).to(u.dtype)

        return branch

    def grad_output(self, out: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 3000)
        return torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)


def run_with_grads(module: torch.nn.Module, x: torch.Tensor, branch, grad_out_fn, call=None, forward_context=None):
    """``(out, grad x, {name: grad})`` of one forward (``call``, default ``module``; inside
    ``forward_context()`` if given, e.g. autocast) and backward (outside it; ``None`` for a
    parameter that got no gradient)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with forward_context() if forward_context else contextlib.nullcontext():
        out = (module if call is None else call)(x, branch)
    out.backward(grad_out_fn(out))
    grads = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return out.detach(), x.grad.detach().clone(), grads


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[bool, float]:
    """``(max |a - b| <= tol * max(1, max |b|), that error / max(1, max |b|))``: relative for large
    values, absolute below 1. NaN never passes."""
    if a.shape != b.shape:
        return False, float("inf")
    err = max_abs(a, b) / max(1.0, b.double().abs().max().item() if b.numel() else 0.0)
    return err <= tol, err


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(max |b|, 1e-30)``."""
    if not a.numel():
        return 0.0
    return max_abs(a, b) / max(b.double().abs().max().item(), 1e-30)
