"""The hyper-connection interface and the coefficient machinery shared by the constrained kinds.

One hyper-connection wraps one branch ``F`` (an attention or MLP sublayer) of a model whose
residual stream is widened to ``n`` streams ``x`` of shape ``(..., n, C)``::

    u    = sum_i H_pre[i] x_i                          (branch input)
    x'_j = sum_i H_res[i, j] x_i + H_post[j] F(u)

``width`` computes ``u``, the mixed residual and ``H_post``; ``depth`` adds the branch output
back. ``mixing`` exposes the three coefficient tensors so tools can read them.

A connection built with ``mix_streams=False`` holds no ``H_res`` parameters and computes no
``H_res``: ``x'_j = x_j + H_post[j] F(u)``, i.e. ``H_res = I`` (what ``mixing`` then reports). The
model uses it where ``H_res`` provably has no effect (docs/design.md, "Inert H_res at the ends").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import kernels
from ..kernels.interface import GivenCoefficients, KernelRoute, ProjectedCoefficients
from .constants import constant, group_index, identity_matrix
from .inference import ParameterCache, inference_path
from .ops import autocast_off, depth_add, pre_mix, project_rms, width_mix

BACKENDS = ("auto", "torch", "triton")


class Mixing(NamedTuple):
    """Per-token coefficients ``pre (..., n)``, ``res (..., n, n)``, ``post (..., n)``.

    float32 for every streams dtype except float64 (see ``compute_dtype``)."""

    pre: torch.Tensor
    res: torch.Tensor
    post: torch.Tensor


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


def token_view(
    t: torch.Tensor, lead: tuple[int, ...], shape: tuple[int, ...], strides: tuple[int, ...], offset: int
) -> torch.Tensor:
    """A view ``(*lead, *shape)`` into ``t`` (tokens, ...) whose token dimension has a uniform
    stride, starting ``offset`` elements into each token: one ``as_strided`` in place of the
    slice/select + view/unsqueeze pair that would otherwise reshape it."""
    step = t.stride(0)
    lead_strides = []
    for size in reversed(lead):
        lead_strides.append(step)
        step *= size
    return t.as_strided((*lead, *shape), (*reversed(lead_strides), *strides), t.storage_offset() + offset)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an integer ``>= minimum`` (a bool, float or string is refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    """``value`` as a finite real number ``> 0`` (a bool or string is refused)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_num_streams(kind: str, num_streams: object) -> int:
    """One rule for every kind: ``residual`` has exactly one stream; every hyper-connection kind
    needs at least two (with one stream there is nothing to mix: that is ``residual``)."""
    if kind == "residual":
        if num_streams != 1 or isinstance(num_streams, bool) or not isinstance(num_streams, int):
            raise ValueError(f"residual: num_streams must be 1, got {num_streams!r}")
        return 1
    if not isinstance(num_streams, int) or isinstance(num_streams, bool) or num_streams < 2:
        raise ValueError(
            f"{kind}: num_streams must be an integer >= 2, got {num_streams!r} (one stream: use kind 'residual')"
        )
    return num_streams


def expand_streams(h: torch.Tensor, num_streams: int) -> torch.Tensor:
    """``(..., C) -> (..., n, C)``: every stream a copy of ``h``."""
    check_int("num_streams", num_streams, 1)
    return h.unsqueeze(-2).expand(*h.shape[:-1], num_streams, h.shape[-1]).contiguous()


def reduce_streams(x: torch.Tensor) -> torch.Tensor:
    """``(..., n, C) -> (..., C)``: the sum over streams."""
    if x.dim() < 2:
        raise ValueError(f"reduce_streams needs streams of shape (..., n, C), got a {x.dim()}-D tensor")
    return x.sum(dim=-2)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for every input dtype but float64 (kept, so float64 gradcheck is exact)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _float32_region(x: torch.Tensor):
    """Autocast off on ``x``'s device: the small-matrix math stays in float32."""
    return autocast_off(x.device.type)


RES_INITS = ("identity", "uniform")


def check_res_init(kind: str, res_init: object) -> str:
    """``res_init`` of the Birkhoff kinds: ``"identity"`` (``H_res`` near ``I`` at init) or
    ``"uniform"`` (``H_res = J = 11^T / n`` exactly at init)."""
    if res_init not in RES_INITS:
        raise ValueError(f"{kind}: res_init must be one of {', '.join(RES_INITS)}, got {res_init!r}")
    return res_init


def check_mix_streams(kind: str, mix_streams: object) -> bool:
    if not isinstance(mix_streams, bool):
        raise ValueError(f"{kind}: mix_streams must be true or false, got {mix_streams!r}")
    return mix_streams


class HyperConnection(nn.Module):
    """Base class: ``n`` streams of width ``C`` mixed around one branch.

    Subclasses implement :meth:`mixing`. ``forward`` and ``width``/``depth`` are shared.

    ``res_columns_sum_to_one`` / ``res_rows_sum_to_one``: whether the kind's ``H_res`` has column
    sums (``1^T H = 1^T``) / row sums (``H 1 = 1``) equal to 1 *exactly*, by construction, for
    every input and parameter value (not merely to an iteration error). ``mixes_streams`` is
    False for a connection built without ``H_res`` (``mix_streams=False``).
    """

    kind: str = ""
    exact_kind: bool = False  # set per instance: type(self) is the kind's registered class
    res_columns_sum_to_one: bool = False
    res_rows_sum_to_one: bool = False

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        recompute: bool = False,
        backend: str = "auto",
        mix_streams: bool = True,
    ) -> None:
        super().__init__()
        check_num_streams(self.kind, num_streams)
        check_int(f"{self.kind}: dim", dim, 1)
        check_int(f"{self.kind}: layer_index", layer_index, 0)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.num_streams = num_streams
        self.dim = dim
        self.layer_index = layer_index
        self.recompute = bool(recompute)
        self.backend = backend
        self.mixes_streams = check_mix_streams(self.kind, mix_streams)
        self._inference_cache = ParameterCache()  # parameter-derived tensors of the no-grad path
        from .registry import registered_class  # the registry imports every kind, this module first

        # the lean paths (no-grad decode math, projection and fused kernels) are the registered
        # class's own math: a subclass, whatever it changes, gets the generic paths built from
        # mixing(), so eval and the kernels agree with training
        self.exact_kind = type(self) is registered_class(self.kind)

    def extra_repr(self) -> str:
        skip = "" if self.mixes_streams else ", mix_streams=False"
        return (
            f"kind={self.kind!r}, num_streams={self.num_streams}, dim={self.dim}, "
            f"layer_index={self.layer_index}, backend={self.backend!r}{skip}"
        )

    def reset_parameters(self) -> None:
        """Set every parameter to its initial value (used after ``to_empty`` on a meta-built model)."""

    def check_streams(self, streams: torch.Tensor) -> None:
        expected = (self.num_streams, self.dim)
        if streams.dim() < 2 or tuple(streams.shape[-2:]) != expected:
            raise ValueError(
                f"{self.kind}: streams must have shape (..., n, dim) = (..., {expected[0]}, {expected[1]}), "
                f"got {tuple(streams.shape)}"
            )
        if not streams.dtype.is_floating_point:
            raise ValueError(f"{self.kind}: streams must be a floating-point tensor, got dtype {streams.dtype}")
        if streams.numel() == 0:
            raise ValueError(f"{self.kind}: streams hold zero tokens (shape {tuple(streams.shape)})")

    def mixing(self, streams: torch.Tensor) -> Mixing:
        raise NotImplementedError

    def kernel_route(self) -> KernelRoute:
        """Which kernels would compute this module's width step; no tensors are built.

        The default is the mixing kernel alone, fed by this module's own :meth:`mixing`
        (PyTorch coefficients): whatever a subclass computes, forward and backward agree."""
        return KernelRoute(self.kind, "mix")

    def kernel_spec(self) -> ProjectedCoefficients | GivenCoefficients:
        """What the Triton kernels need to run :meth:`kernel_route` (``hyperconn.kernels.interface``)."""
        return GivenCoefficients(kind=self.kind, mixing=self.mixing)

    def _uses_kernels(self, streams: torch.Tensor) -> bool:
        if self.backend == "torch" or (self.backend == "auto" and not streams.is_cuda):
            return False  # the common case first
        return kernels.select(self.backend, self.kernel_route(), streams)

    def width(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(u, mixed, h_post)``: branch input (..., C) and ``H_res``-mixed streams
        (..., n, C), both in the streams' dtype, and ``H_post`` (..., n) in ``compute_dtype``.

        ``backend`` picks PyTorch or the Triton kernels (:func:`hyperconn.kernels.select`). With
        ``recompute=True`` (and gradients enabled) nothing computed here is kept for backward
        except the streams themselves, on either backend: the coefficient math and the mixing
        run again in backward (``torch.utils.checkpoint``), trading one more forward of the
        width connection for its saved activations."""
        self.check_streams(streams)
        if not self.mixes_streams:
            # nothing to mix: u = H_pre x in PyTorch on every backend, the streams pass through
            step = self.width_inference if inference_path() else self.width_fast
        elif self._uses_kernels(streams):
            step = self._width_kernels
        elif inference_path():
            return self.width_inference(streams)
        else:
            step = self.width_fast
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(step, streams, use_reentrant=False)
        return step(streams)

    def _width_kernels(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return kernels.width(self.kernel_spec(), streams)

    def width_fast(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The width connection in PyTorch: coefficients, then one mixing pass over the streams."""
        pre, res, post = self.mixing(streams)
        if not self.mixes_streams:
            return pre_mix(pre, streams), streams, post
        u, mixed = width_mix(pre, res, streams)
        return u, mixed, post

    def width_inference(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The width step with autograd off (decode, evaluation): ``[u; mixed] = [H_pre; H_res^T] x``
        as one batched GEMM per token, from :meth:`inference_mixing`.

        Same values as :meth:`width_fast` (to rounding); ``u`` and ``mixed`` are views of one GEMM
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
        """:meth:`forward` with autograd off, in few ATen ops (a decode token runs it on one token,
        where each op costs microseconds whatever its size)::

            y = mat @ x                          one bmm: u = y[pre_row], mixed = y[res_row:res_row+n]
            x' = mixed + post_scale * post * F(u)     one addcmul

        ``u`` and ``mixed`` are ``as_strided`` views of ``y`` (:func:`token_view`); the arithmetic
        is that of ``width``/``depth`` (coefficients and mixing in ``compute_dtype``, the result
        in the streams' dtype)."""
        self.check_streams(streams)
        n, c = self.num_streams, self.dim
        lead = tuple(streams.shape[:-2])
        with _float32_region(streams):
            step = self.inference_mixing(streams)
            y = self._inference_gemm(step.mat, streams)
        rows = step.mat.shape[1]
        out = branch(token_view(y, lead, (c,), (1,), step.pre_row * c))
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{self.kind}: the branch must return one tensor of shape (..., {self.dim}), got {type(out).__name__}"
            )
        with _float32_region(streams):
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

    def cached_inference_constants(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """:meth:`inference_constants`, rebuilt only when a parameter changes (:class:`ParameterCache`)."""
        # the module's own parameters (a connection has no submodules; None = unset, e.g. sHC
        # n = 2 has no gamma) read straight from ``_parameters``: ``nn.Module.parameters()``
        # costs ~10 us a call (a generator hashing every tensor into a memo set)
        return self._inference_cache.get(
            [p for p in self._parameters.values() if p is not None], (dtype, device),
            lambda: self.inference_constants(dtype),
        )

    def inference_mixing(self, streams: torch.Tensor) -> InferenceMixing:
        """The coefficients of :meth:`inference_forward` (autograd off). The default builds them
        from :meth:`mixing`; the kinds' own classes override it with fewer ops."""
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

    def identity_res(self, pre: torch.Tensor) -> torch.Tensor:
        """``H_res = I`` broadcast to ``pre``'s tokens, (..., n, n): what a connection without
        ``H_res`` applies (a view: nothing is materialised)."""
        n = self.num_streams
        eye = constant(identity_matrix, (n,), pre.dtype, pre.device)
        return eye.expand(*pre.shape[:-1], n, n)

    def depth(self, mixed: torch.Tensor, h_post: torch.Tensor, branch_out: torch.Tensor) -> torch.Tensor:
        """``x'_j = mixed_j + H_post[j] * branch_out``, computed in ``h_post``'s dtype, in ``mixed``'s."""
        if self._uses_kernels(mixed):
            return kernels.depth(mixed, h_post, branch_out)
        return depth_add(mixed, h_post, branch_out)

    def forward(self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if inference_path() and not self._uses_kernels(streams):
            return self.inference_forward(streams, branch)
        return self.steps_forward(streams, branch)

    def steps_forward(self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``depth(mixed, h_post, branch(u))`` with ``(u, mixed, h_post) = width(streams)``."""
        u, mixed, h_post = self.width(streams)
        out = branch(u)
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{self.kind}: the branch must return one tensor of shape (..., {self.dim}), got {type(out).__name__}"
            )
        return self.depth(mixed, h_post, out)


def _pm_one_bias(num_streams: int, layer_index: int) -> torch.Tensor:
    """``+1`` at ``layer_index mod n``, ``-1`` elsewhere (the H_pre / H_post static bias)."""
    b = -torch.ones(num_streams)
    b[layer_index % num_streams] = 1.0
    return b


class CoefficientConnection(HyperConnection):
    """Machinery shared by mHC, mHC-lite, KromHC and sHC (docs/design.md, "Shared coefficient machinery").

    ``x~ = RMSNorm(flatten(x))`` over ``n*C`` features; one fused zero-initialised projection
    ``d = x~ @ W`` gives the raw coefficients of every group; per group ``coef = s * d + b`` with
    a scalar gate ``s`` (init 0.01) and a static bias ``b``::

        H_pre  = sigmoid(s_pre d_pre + b_pre)
        H_post = 2 sigmoid(s_post d_post + b_post)
        H_res  = method-specific function of the residual coefficients

    The RMSNorm is folded into the projection: ``x~ @ W = rsqrt(mean(x^2) + eps) * (x @ (g W))``,
    so the normalised ``n*C`` tensor is never materialised.

    Subclasses set ``res_groups`` (sizes of the residual coefficient groups, one gate each),
    ``res_bias()`` and ``res_matrix(coefs)``. With ``mix_streams=False`` only the ``H_pre`` and
    ``H_post`` groups exist (``group_sizes = (n, n)``) and ``H_res = I``.
    """

    def __init__(
        self,
        num_streams: int,
        dim: int,
        layer_index: int = 0,
        eps: float = 1e-6,
        recompute: bool = False,
        backend: str = "auto",
        mix_streams: bool = True,
    ) -> None:
        super().__init__(num_streams, dim, layer_index, recompute, backend, mix_streams)
        eps = check_positive_number(f"{self.kind}: eps", eps)
        n = num_streams
        self.eps = eps
        self.group_sizes = (n, n, *self.res_groups()) if self.mixes_streams else (n, n)
        total = sum(self.group_sizes)
        self.norm_weight = nn.Parameter(torch.empty(n * dim))
        self.proj = nn.Parameter(torch.empty(n * dim, total))
        self.gates = nn.Parameter(torch.empty(len(self.group_sizes)))
        self.bias = nn.Parameter(torch.empty(total))
        # the leaf class calls reset_parameters() once all its parameters exist

    def initial_bias(self) -> torch.Tensor:
        """The static biases at init: ``+-1`` for H_pre and H_post, then :meth:`res_bias`."""
        n, i = self.num_streams, self.layer_index
        res = self.res_bias() if self.mixes_streams else torch.zeros(0)
        return torch.cat([_pm_one_bias(n, i), _pm_one_bias(n, i), res])

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.norm_weight.fill_(1.0)
            self.proj.zero_()
            self.gates.fill_(0.01)
            self.bias.copy_(self.initial_bias())

    # --- method-specific part -------------------------------------------------------------
    def res_groups(self) -> tuple[int, ...]:
        raise NotImplementedError

    def res_bias(self) -> torch.Tensor:
        raise NotImplementedError

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        """``H_res`` (..., n, n) from the gated+biased residual coefficient groups."""
        raise NotImplementedError

    # --- shared part ----------------------------------------------------------------------
    def coefficients(self, streams: torch.Tensor) -> torch.Tensor:
        """``s * (x~ @ W) + b`` for every group, in ``compute_dtype``, shape (..., total)."""
        dt = compute_dtype(streams)
        with _float32_region(streams):
            flat = streams.reshape(*streams.shape[:-2], -1)
            weight = self.folded_weight(dt)
            raw = project_rms(flat, weight, self.eps)
            return raw * self.gate_scale(dt) + self.bias.to(dt)

    def gate_scale(self, dtype: torch.dtype) -> torch.Tensor:
        """The gate of each coefficient, (total,): ``gates`` repeated over its group."""
        index = constant(group_index, (self.group_sizes,), torch.long, self.gates.device)
        return self.gates.to(dtype)[index]

    def folded_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """``g W`` (n C, total): the RMSNorm gain folded into the projection."""
        return self.norm_weight.to(dtype).unsqueeze(-1) * self.proj.to(dtype)

    def coefficient_math(self, coef: torch.Tensor) -> Mixing:
        """Gated + biased coefficients (..., total) -> ``(H_pre, H_res, H_post)``."""
        parts = list(coef.split_with_sizes(self.group_sizes, dim=-1))  # (no Python-level split wrapper)
        pre = torch.sigmoid(parts[0])
        res = self.res_matrix(parts[2:]) if self.mixes_streams else self.identity_res(pre)
        return Mixing(pre, res, 2 * torch.sigmoid(parts[1]))

    def kernel_route(self) -> KernelRoute:
        """The projection runs in a kernel and :meth:`coefficient_math` in PyTorch for the kinds'
        own classes (:attr:`exact_kind`); a subclass gets the mixing kernel alone, from :meth:`mixing`."""
        if not self.exact_kind:
            return super().kernel_route()
        return KernelRoute(self.kind, "projection", sum(self.group_sizes))

    def kernel_spec(self) -> ProjectedCoefficients | GivenCoefficients:
        if self.kernel_route().route == "mix":
            return super().kernel_spec()
        with autocast_off(self.proj.device.type):
            return ProjectedCoefficients(
                kind=self.kind,
                weight=self.folded_weight(torch.float32),
                scale=self.gate_scale(torch.float32),
                bias=self.bias.float(),
                eps=self.eps,
                coefficient_math=self.coefficient_math,
            )

    def mixing(self, streams: torch.Tensor) -> Mixing:
        self.check_streams(streams)
        coef = self.coefficients(streams)
        with _float32_region(streams):
            return self.coefficient_math(coef)

    # --- the gradient-free path (decode, evaluation) ---------------------------------------
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
        """:meth:`coefficients` from the cached folded weight, (tokens, total), in four ops: with
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
        """:meth:`coefficient_math` on the cached coefficients; kinds override it with fewer ops."""
        pre, res, post = self.coefficient_math(coef)
        return InferenceMixing(self.width_matrix(pre, res), post.view(*lead, self.num_streams, 1))
