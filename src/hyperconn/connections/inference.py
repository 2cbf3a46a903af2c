"""The gradient-free path (decode, evaluation): its steps and the values it caches.

:class:`InferenceSteps` and :class:`CoefficientInference` are the no-grad methods of the
connection classes (mixins of ``HyperConnection`` and ``CoefficientConnection``): the width and
depth steps as one batched GEMM and one ``addcmul`` per call, from :class:`InferenceMixing`.

Values a connection derives from its parameters (the projection with the RMSNorm gain and the
gates folded in, a kind's other parameter-only tensors) are a handful of ops per call that give
the same result every time the parameters are the same. One decode token calls every connection
on a ``(1, 1, n, C)`` tensor, where the cost is the number of ATen ops, not the data: so inside a
:func:`frozen_parameters` scope (``generate`` opens one for its whole loop) they are built once.

Outside such a scope nothing is cached: every call derives them from the parameters as they are.
A cache keyed on what PyTorch tracks about a parameter cannot be trusted: ``fused=True`` optimizers
and writes through ``.data`` change the values without bumping ``_version``. A scope is a promise
the caller can keep (nothing writes the parameters while it is open), and it ends with the call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import NamedTuple

import torch

from .streams import compute_dtype, float32_region, token_view


class ParameterCache:
    """Values built from a connection's parameters, kept for one :func:`frozen_parameters` scope.

    Keyed on the dtype and device asked for; the parameters' identity, storage and ``_version``
    are checked too, so a write PyTorch does see (or a replaced parameter) still rebuilds it."""

    def __init__(self) -> None:
        self._values: dict[Hashable, tuple[tuple, object]] = {}

    def get(self, params: Iterable[torch.Tensor], extra: Hashable, build: Callable[[], object]) -> object:
        key = tuple((id(p), p.data_ptr(), p._version) for p in params if p is not None)
        hit = self._values.get(extra)
        if hit is not None and hit[0] == key:
            return hit[1]
        # normal tensors even when built inside generate's inference mode: the process-wide
        # constants built on the way (polynomial maps) outlive it and may meet autograd
        with torch.inference_mode(False), torch.no_grad():
            value = build()
        self._values[extra] = (key, value)
        return value


@contextlib.contextmanager
def frozen_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Build the no-grad path's parameter-derived tensors once per connection under ``module``
    while the scope is open, instead of on every call (``generate`` runs its loop in one).

    The caller promises that nothing writes the parameters inside the scope: no optimizer step,
    no ``load_state_dict``, no ``.data`` edit. On exit every cache is dropped, so evaluation and
    generation after a write always see the new weights. Scopes nest (the outermost one owns
    the caches)."""
    opened = []
    for sub in module.modules():
        if isinstance(sub, InferenceSteps) and sub._inference_cache is None:
            sub._inference_cache = ParameterCache()
            opened.append(sub)
    try:
        yield
    finally:
        for sub in opened:
            sub._inference_cache = None


def inference_path() -> bool:
    """Whether the cached gradient-free path applies: autograd off and not tracing for compile
    (``torch.compile`` sees the plain path and folds the constants itself)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


class InferenceMixing(NamedTuple):
    """One gradient-free step's coefficients, laid out for as few ATen ops as possible.

    ``mat`` (tokens, rows, n): row ``pre_row`` is ``H_pre`` and rows ``res_row .. res_row + n - 1``
    are ``H_res^T`` (absent without ``H_res``); other rows are ignored (they ride along in the one
    batched GEMM ``mat @ x`` rather than cost a slice). ``post`` (..., n, 1) in the streams' lead
    shape, with ``H_post = post_scale * post`` (the scale goes into the depth step's ``addcmul``)."""

    mat: torch.Tensor
    post: torch.Tensor
    pre_row: int = 0
    res_row: int = 1
    post_scale: float = 1.0


class InferenceSteps:
    """The gradient-free path of :class:`~hyperconn.connections.base.HyperConnection` (a mixin:
    it reads ``num_streams``, ``dim``, ``mixes_streams``, ``kind``, ``mixing`` and ``check_streams``
    of the connection it is part of)."""

    def width_inference(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The width step with autograd off (decode, evaluation): ``[u; mixed] = [H_pre; H_res^T] x``
        as one batched GEMM per token, from :meth:`inference_mixing`.

        Same values as ``width_fast`` (to rounding); ``u`` and ``mixed`` are views of one GEMM
        result. Without ``H_res`` (``mix_streams=False``) the streams are returned as ``mixed``."""
        step = self.inference_mixing(streams)
        y = self._inference_gemm(step.mat, streams)
        lead, n = streams.shape[:-2], self.num_streams
        u = y[:, step.pre_row].view(*lead, self.dim)
        mixed = y[:, step.res_row : step.res_row + n].view(streams.shape) if self.mixes_streams else streams
        return u, mixed, (step.post * step.post_scale).view(*lead, n)

    def _inference_gemm(self, mat: torch.Tensor, streams: torch.Tensor) -> torch.Tensor:
        """``mat @ x`` (tokens, rows, C) in ``mat``'s dtype, cast back to the streams' dtype."""
        x = streams.reshape(-1, self.num_streams, self.dim)
        if x.dtype != mat.dtype:
            x = x.to(mat.dtype)
        y = torch.bmm(mat, x)
        return y if y.dtype == streams.dtype else y.to(streams.dtype)

    def inference_forward(
        self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``forward`` with autograd off, in few ATen ops (a decode token runs it on one token,
        where each op costs microseconds whatever its size)::

            y = mat @ x                          one bmm: u = y[pre_row], mixed = y[res_row:res_row+n]
            x' = mixed + post_scale * post * F(u)     one addcmul

        ``u`` and ``mixed`` are ``as_strided`` views of ``y`` (:func:`token_view`); the arithmetic
        is that of ``width``/``depth`` (coefficients and mixing in ``compute_dtype``, the result
        in the streams' dtype)."""
        self.check_streams(streams)
        n, c = self.num_streams, self.dim
        lead = tuple(streams.shape[:-2])
        region = float32_region(streams)  # entered twice, built once
        with region:
            step = self.inference_mixing(streams)
            y = self._inference_gemm(step.mat, streams)
        rows = step.mat.shape[1]
        u = token_view(y, lead, (c,), (1,), step.pre_row * c)
        out = self.check_branch_output(branch(u), u)
        with region:
            if self.mixes_streams:
                mixed = token_view(y, lead, (n, c), (c, 1), step.res_row * c) if rows > n else y.view(streams.shape)
            else:
                mixed = streams
            dt = step.post.dtype
            if mixed.dtype != dt:
                mixed = mixed.to(dt)
            b = out.unsqueeze(-2)
            if b.dtype != dt:
                b = b.to(dt)
            new = torch.addcmul(mixed, step.post, b, value=step.post_scale)
        return new if new.dtype == streams.dtype else new.to(streams.dtype)

    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Tensors the no-grad path derives from the parameters alone (folded weights...)."""
        return {}

    _inference_cache: ParameterCache | None = None  # set by frozen_parameters() for its scope

    def cached_inference_constants(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """:meth:`inference_constants`: built once per :func:`frozen_parameters` scope, on every
        call outside one (nothing then can be stale)."""
        cache = self._inference_cache
        if cache is None:
            return self.inference_constants(dtype)
        # the module's own parameters (a connection has no submodules; None = unset, e.g. sHC
        # n = 2 has no gamma) read straight from ``_parameters``: ``nn.Module.parameters()`` is a
        # generator hashing every tensor into a memo set, which a decode token pays per call
        return cache.get(self._parameters.values(), (dtype, device), lambda: self.inference_constants(dtype))

    def inference_mixing(self, streams: torch.Tensor) -> InferenceMixing:
        """The coefficients of :meth:`inference_forward` (autograd off). The default builds them
        from ``mixing``; the kinds' own classes override it with fewer ops."""
        pre, res, post = self.mixing(streams)
        return InferenceMixing(self.width_matrix(pre, res), post.unsqueeze(-1))

    def inference_width_matrix(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([H_pre; H_res^T] (tokens, n + 1, n), H_post (..., n))`` from :meth:`inference_mixing`
        (``H_pre`` alone, ``(tokens, 1, n)``, without ``H_res``)."""
        step = self.inference_mixing(streams)
        n, mat = self.num_streams, step.mat
        rows = [mat[:, step.pre_row : step.pre_row + 1]]
        if self.mixes_streams:
            rows.append(mat[:, step.res_row : step.res_row + n])
        post = (step.post * step.post_scale).reshape(*streams.shape[:-2], n)
        return torch.cat(rows, dim=1), post

    def width_matrix(self, pre: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        """``[H_pre; H_res^T]`` as (tokens, n + 1, n); ``H_pre`` alone (tokens, 1, n) without ``H_res``."""
        n = self.num_streams
        if not self.mixes_streams:
            return pre.reshape(-1, 1, n)
        return torch.cat([pre.unsqueeze(-2), res.transpose(-1, -2)], dim=-2).reshape(-1, n + 1, n)


class CoefficientInference:
    """The gradient-free coefficients of :class:`~hyperconn.connections.base.CoefficientConnection`
    (a mixin: it reads the projection's parameters and ``coefficient_math`` of its connection)."""

    def inference_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The projection with the RMSNorm gain, the gates and ``sqrt(F)`` folded in,
        ``sqrt(F) g W diag(s)`` (F = n C), the bias and ``sqrt(F eps)`` as a tensor."""
        features = self.num_streams * self.dim
        return {
            "weight": self.folded_weight(dtype) * (self.gate_scale(dtype) * math.sqrt(features)),
            "bias": self.bias.to(dtype),
            "root_eps": torch.tensor(math.sqrt(features * self.eps), dtype=dtype, device=self.bias.device),
        }

    def inference_coefficients(self, streams: torch.Tensor, consts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``coefficients`` from the cached folded weight, (tokens, total), in four ops: with
        ``rsqrt(|x|^2 / F + eps) = sqrt(F) / hypot(|x|, sqrt(F eps))``,
        ``consts["bias"] + (x @ consts["weight"]) / hypot(|x|, consts["root_eps"])``."""
        weight = consts["weight"]
        flat = streams.reshape(-1, weight.shape[0])
        if flat.dtype != weight.dtype:
            flat = flat.to(weight.dtype)
        norm = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
        return torch.addcdiv(consts["bias"], flat @ weight, torch.hypot(norm, consts["root_eps"]))

    def inference_mixing(self, streams: torch.Tensor) -> InferenceMixing:
        if not self.exact_kind:
            return super().inference_mixing(streams)
        consts = self.cached_inference_constants(compute_dtype(streams), streams.device)
        coef = self.inference_coefficients(streams, consts)
        lead = tuple(streams.shape[:-2])
        if not self.mixes_streams:
            return self.pre_post_mixing(coef, lead)
        return self.lean_mixing(coef, consts, lead)

    def pre_post_mixing(self, coef: torch.Tensor, lead: tuple[int, ...]) -> InferenceMixing:
        """Without ``H_res``: ``H_pre = sigmoid(c_pre)``, ``H_post = 2 sigmoid(c_post)`` as one
        sigmoid; its (tokens, 2, n) view is the GEMM matrix (row 0 ``H_pre``, row 1 ignored)."""
        n = self.num_streams
        act = torch.sigmoid(coef)
        return InferenceMixing(act.view(-1, 2, n), token_view(act, lead, (n, 1), (1, 1), n), post_scale=2.0)

    def lean_mixing(
        self, coef: torch.Tensor, consts: dict[str, torch.Tensor], lead: tuple[int, ...]
    ) -> InferenceMixing:
        """``coefficient_math`` on the cached coefficients; kinds override it with fewer ops."""
        pre, res, post = self.coefficient_math(coef)
        return InferenceMixing(self.width_matrix(pre, res), post.view(*lead, self.num_streams, 1))
