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

The gradient-free path of both classes lives in :mod:`hyperconn.connections.inference` (mixins),
the argument checks in :mod:`hyperconn.connections.validation` and the stream helpers in
:mod:`hyperconn.connections.streams`; their names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import kernels
from ..kernels.interface import GivenCoefficients, KernelRoute, ProjectedCoefficients
from .constants import constant, group_index, identity_matrix
from .inference import CoefficientInference, InferenceMixing, InferenceSteps, inference_path
from .invariants import closure
from .ops import StreamGradSlot, autocast_off, depth_add, pre_mix, project_rms, width_mix
from .streams import compute_dtype, expand_streams, float32_region, reduce_streams, token_view
from .validation import (
    BACKENDS,
    RES_INITS,
    check_backend,
    check_int,
    check_mix_streams,
    check_num_streams,
    check_positive_number,
    check_res_init,
)

# importable from here as before (the kinds, hyperconn.bench and user code import them from base)
__all__ = [
    "BACKENDS",
    "RES_INITS",
    "CoefficientConnection",
    "HyperConnection",
    "InferenceMixing",
    "Mixing",
    "check_int",
    "check_mix_streams",
    "check_num_streams",
    "check_positive_number",
    "check_res_init",
    "compute_dtype",
    "expand_streams",
    "float32_region",
    "reduce_streams",
    "token_view",
]


class Mixing(NamedTuple):
    """Per-token coefficients ``pre (..., n)``, ``res (..., n, n)``, ``post (..., n)``.

    float32 for every streams dtype except float64 (see ``compute_dtype``)."""

    pre: torch.Tensor
    res: torch.Tensor
    post: torch.Tensor


class HyperConnection(InferenceSteps, nn.Module):
    """Base class: ``n`` streams of width ``C`` mixed around one branch.

    Subclasses implement :meth:`mixing`. ``forward`` and ``width``/``depth`` are shared.

    ``invariants``: what the kind's ``H_res`` satisfies exactly, by construction, for every input
    and parameter value (names from :data:`hyperconn.connections.invariants.INVARIANTS`, e.g.
    ``("rows_sum_to_one", "columns_sum_to_one")``). The model, ``hyperconn analyze`` and the
    conformance kit read it. :meth:`initial_res` is ``H_res`` at init where the kind fixes it
    exactly. ``mixes_streams`` is False for a connection built without ``H_res``
    (``mix_streams=False``).
    """

    kind: str = ""
    exact_kind: bool = False  # set per instance: type(self) is the kind's registered class
    invariants: tuple[str, ...] = ()

    @classmethod
    def guarantees(cls, name: str) -> bool:
        """Whether ``H_res`` satisfies invariant ``name`` exactly: declared, or implied by a
        declared one (``identity`` implies every other, ``orthogonal`` a spectral norm of 1)."""
        return name in closure(cls.invariants)

    def initial_res(self) -> torch.Tensor | None:
        """``H_res`` (n, n) in float64 right after ``reset_parameters``, for every input, where the
        kind fixes it exactly; ``None`` where it does not (e.g. mHC's Sinkhorn from ``-8`` logits).
        Without ``H_res`` (``mix_streams=False``): ``I``."""
        if not self.mixes_streams:
            return torch.eye(self.num_streams, dtype=torch.float64)
        return None

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
        check_backend(backend)
        self.num_streams = num_streams
        self.dim = dim
        self.layer_index = layer_index
        self.recompute = bool(recompute)
        self.backend = backend
        self.mixes_streams = check_mix_streams(self.kind, mix_streams)
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

    def check_branch_output(self, out: object, u: torch.Tensor) -> torch.Tensor:
        """``out`` if the branch returned one tensor of ``u``'s shape (..., C), else one ValueError."""
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"{self.kind}: the branch must return one tensor of shape (..., {self.dim}), got {type(out).__name__}"
            )
        if out.shape != u.shape:
            raise ValueError(
                f"{self.kind}: the branch took {tuple(u.shape)} and returned {tuple(out.shape)}; a branch must "
                f"keep the shape (..., {self.dim}): the connection adds its output back to the streams"
            )
        return out

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
        """``depth(mixed, h_post, branch(u))`` with ``(u, mixed, h_post) = width(streams)``.

        Where ``mixed`` is this call's own fresh mixing output (:meth:`_depth_in_place`), the
        depth step writes ``x'`` into it in place: the same values, one stream-sized tensor fewer."""
        u, mixed, h_post = self.width(streams)
        out = self.check_branch_output(branch(u), u)
        if self._depth_in_place(streams, mixed, h_post):
            return depth_add(mixed, h_post, out, in_place=True)
        return self.depth(mixed, h_post, out)

    def _depth_in_place(self, streams: torch.Tensor, mixed: torch.Tensor, h_post: torch.Tensor) -> bool:
        """Whether ``mixed`` came from :meth:`width_fast`'s mixing in this call (a fresh tensor that
        autograd did not save and no caller has seen): the library's own classes
        (:attr:`exact_kind`) whose ``mixed`` is not the streams themselves (residual, no ``H_res``),
        eager PyTorch, no recompute (whose checkpoint owns its outputs), ``mixed`` in ``h_post``'s dtype."""
        return (
            self.exact_kind
            and not self.recompute
            and mixed is not streams
            and mixed.dtype == h_post.dtype
            and not torch.compiler.is_compiling()
            and not self._uses_kernels(streams)
        )


def _pm_one_bias(num_streams: int, layer_index: int) -> torch.Tensor:
    """``+1`` at ``layer_index mod n``, ``-1`` elsewhere (the H_pre / H_post static bias)."""
    b = -torch.ones(num_streams)
    b[layer_index % num_streams] = 1.0
    return b


class CoefficientConnection(CoefficientInference, HyperConnection):
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

    def initial_res(self) -> torch.Tensor | None:
        """``J = 11^T / n`` for the Birkhoff kinds' ``res_init="uniform"`` (equal logits), ``I``
        without ``H_res``; otherwise what the kind declares (``None`` here)."""
        res = super().initial_res()
        if res is None and getattr(self, "res_init", None) == "uniform":
            n = self.num_streams
            return torch.full((n, n), 1.0 / n, dtype=torch.float64)
        return res

    # --- method-specific part -------------------------------------------------------------
    def res_groups(self) -> tuple[int, ...]:
        raise NotImplementedError

    def res_bias(self) -> torch.Tensor:
        raise NotImplementedError

    def res_matrix(self, coefs: list[torch.Tensor]) -> torch.Tensor:
        """``H_res`` (..., n, n) from the gated+biased residual coefficient groups."""
        raise NotImplementedError

    # --- shared part ----------------------------------------------------------------------
    def coefficients(self, streams: torch.Tensor, slot: StreamGradSlot | None = None) -> torch.Tensor:
        """``s * (x~ @ W) + b`` for every group, in ``compute_dtype``, shape (..., total).

        ``slot``: shared with the mixing of the same streams (:meth:`width_fast`)."""
        dt = compute_dtype(streams)
        with float32_region(streams):
            flat = streams.reshape(*streams.shape[:-2], -1)
            weight = self.folded_weight(dt)
            raw = project_rms(flat, weight, self.eps, slot)
            return raw * self.gate_scale(dt) + self.bias.to(dt)

    def width_fast(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The width connection in PyTorch, the projection and the mixing sharing one
        :class:`~hyperconn.connections.ops.StreamGradSlot`: in backward the mixing's ``grad x``
        and the projection's are summed in one buffer, in place (the kinds' own classes,
        :attr:`exact_kind`, with or without ``H_res``; otherwise the generic
        :meth:`HyperConnection.width_fast`)."""
        if not self.exact_kind or torch.compiler.is_compiling():
            return super().width_fast(streams)  # (under torch.compile: the plain traced forms)
        slot = StreamGradSlot()
        pre, res, post = self._coefficient_mixing(streams, slot)
        if not self.mixes_streams:
            return pre_mix(pre, streams, slot), streams, post
        u, mixed = width_mix(pre, res, streams, slot)
        return u, mixed, post

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
        return self._coefficient_mixing(streams)

    def _coefficient_mixing(self, streams: torch.Tensor, slot: StreamGradSlot | None = None) -> Mixing:
        """``coefficient_math(coefficients(streams))``: :meth:`mixing` without the shape check, and
        :meth:`width_fast` with its slot."""
        coef = self.coefficients(streams, slot)
        with float32_region(streams):
            return self.coefficient_math(coef)
