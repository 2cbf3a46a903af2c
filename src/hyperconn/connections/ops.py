"""The stream-side operations of a hyper-connection, with hand-written backward passes.

Everything that touches the ``(..., n, C)`` streams is one of three operations; the coefficient
math in between acts on a few numbers per token and is left to autograd.

- :func:`project_rms` -- ``d = rsqrt(mean(x^2) + eps) * (x @ W)``: the RMSNorm folded into the
  coefficient projection (the normalised tensor is never materialised).
- :func:`width_mix` -- ``u = sum_i pre[i] x_i``, ``mixed_j = sum_i res[i, j] x_i``
  (:func:`pre_mix`: ``u`` alone, for a connection without ``H_res``).
- :func:`depth_add` -- ``x'_j = mixed_j + post[j] * b``.

Each backward is written so that every pass over a stream-sized tensor is a batched GEMM whose
per-token product is ``(k, n) x (n, C)`` (full-width BLAS), never a broadcast product followed by
a reduction: autograd's generic backward of the broadcast forms materialises and reduces one
``(..., n, C)`` temporary per term, and of a slice it zero-fills the whole parent
(``docs/performance.md``, "Where the time goes", has the measurements).

Within one connection call (``CoefficientConnection.width_fast`` and ``steps_forward``) two
passes over the streams go: the projection and the mixing share a :class:`StreamGradSlot`, so
their two ``grad x`` are summed in one buffer in place (no autograd sum, no fresh output for the
projection's ``grad_raw @ W^T``), and :func:`depth_add` with ``in_place=True`` writes ``x'`` into
the mixing's fresh output instead of a new tensor. Same equations; ``docs/performance.md``,
"Training step: fused depth and width", has the measurements.

Under ``torch.compile`` the mixing and depth steps are traced as plain broadcast expressions
instead (:func:`_compiling`): Inductor fuses those into a few loops over the streams, which beats
calling out to a GEMM per piece; the projection keeps its hand-written backward (its GEMM
layouts beat what Inductor derives from the plain form).

Arithmetic is in the dtype of the coefficients (``compute_dtype``: float32, or float64 for
float64 streams); bfloat16/float16 streams are cast on the fly and only the original streams are
saved for backward (no float32 copy is kept alive). Autocast is switched off inside every
operation, forward and backward (:func:`autocast_off`): under ``torch.autocast(dtype=bfloat16)``
float32 streams are mixed in float32 exactly as without autocast, instead of being rounded to
bfloat16 at every sublayer by an autocast GEMM. The backward passes are first-order only
(``once_differentiable``: double backward raises instead of returning a wrong value);
``torch.compile`` and inference use the plain-op forms, which autograd differentiates as usual.
"""

from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable


def autocast_off(device_type: str):
    """A context that disables autocast on ``device_type``: a no-op ``nullcontext`` when autocast
    is off (entering ``torch.autocast`` costs microseconds per call, which adds up in decode)."""
    if torch.compiler.is_compiling() or torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _plain(*tensors: torch.Tensor) -> bool:
    """Use plain ops (no custom backward): under compile, or when nothing needs a gradient
    (inference, decode: one token at a time, where the ``autograd.Function`` call overhead
    would dominate)."""
    if torch.compiler.is_compiling():
        return True
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


class StreamGradSlot:
    """Hands the width mixing's ``grad x`` to the projection's backward of the same width step.

    Both read the same streams, so autograd would sum their two ``grad x`` in one more pass over
    the streams (and the projection's ``grad_raw @ W^T`` would write a fresh stream-sized
    tensor). With one slot passed to :func:`project_rms` and :func:`width_mix`, the mixing's
    backward (which always runs first: the projection feeds the mixing's coefficients) leaves its
    ``grad x`` here and returns none for the streams; the projection's backward accumulates its
    own terms into that buffer in place (``addmm_``, ``addcmul_``) and returns the sum. Same
    equation, one pass and one allocation fewer. A slot serves one forward call of each."""

    __slots__ = ("armed", "grad")

    def __init__(self) -> None:
        self.armed = False  # set by the projection's forward when the streams need a gradient
        self.grad: torch.Tensor | None = None

    def take(self) -> torch.Tensor | None:
        grad, self.grad = self.grad, None
        return grad


class _ProjectRMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat: torch.Tensor, weight: torch.Tensor, eps: float, slot: StreamGradSlot | None):
        with autocast_off(flat.device.type):
            return _ProjectRMS._forward(ctx, flat, weight, eps, slot)

    @staticmethod
    def _forward(ctx, flat: torch.Tensor, weight: torch.Tensor, eps: float, slot: StreamGradSlot | None):
        ctx.slot = slot
        if slot is not None:
            slot.armed = flat.requires_grad
        x = flat.to(weight.dtype)
        features = x.shape[-1]
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        inv_rms = torch.rsqrt(norm.square() / features + eps)
        raw = x @ weight
        ctx.save_for_backward(flat, weight, inv_rms, raw)
        return raw * inv_rms

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        flat, weight, inv_rms, raw = ctx.saved_tensors
        acc = None if ctx.slot is None else ctx.slot.take()
        with autocast_off(flat.device.type):
            return _ProjectRMS._backward(flat, weight, inv_rms, raw, grad, acc)

    @staticmethod
    def _backward(flat, weight, inv_rms, raw, grad, acc=None):
        x = flat.to(weight.dtype)
        features = x.shape[-1]
        grad = grad.contiguous()
        grad_raw = grad * inv_rms
        # d inv_rms / d x = -inv_rms^3 x / features
        scale = (grad * raw).sum(-1, keepdim=True) * (-inv_rms.pow(3) / features)
        # the GEMM writes a fresh tensor (or adds into the mixing's grad x, ``acc``), the RMS term
        # is added in place: two passes over (..., F)
        grad_2d = grad_raw.reshape(-1, grad.shape[-1])
        if acc is None:
            grad_x = (grad_2d @ weight.t()).reshape(x.shape)
        else:
            grad_x = acc.view(x.shape)
            grad_x.view(-1, features).addmm_(grad_2d, weight.t())
        grad_x.addcmul_(x, scale)
        # computed as (K, F) = grad^T x and returned transposed: MKL runs this narrow-K GEMM
        # faster than x^T grad (docs/performance.md, "Where the time goes")
        grad_weight = (grad_raw.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, features)).t()
        return grad_x.to(flat.dtype), grad_weight, None, None


def project_rms(
    flat: torch.Tensor, weight: torch.Tensor, eps: float, slot: StreamGradSlot | None = None
) -> torch.Tensor:
    """``rsqrt(mean(flat^2, -1) + eps) * (flat @ weight)``, in ``weight``'s dtype.

    ``flat`` (..., F), ``weight`` (F, K) -> (..., K). Equals ``RMSNorm(flat) @ W`` for
    ``weight = gain[:, None] * W``. ``slot``: shared with the :func:`width_mix` of the same
    streams (``flat`` a view of them), whose ``grad x`` the backward then accumulates into
    (:class:`StreamGradSlot`); ignored under ``torch.compile`` and without gradients.
    """
    with autocast_off(flat.device.type):
        # the hand-written backward under torch.compile too (unlike the mixing ops): Inductor
        # keeps its GEMM layouts (dW as grad^T x, no transposed copy of x), faster than the traced
        # plain form (docs/performance.md, "Where the time goes")
        if torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad):
            return _ProjectRMS.apply(flat, weight, eps, None if _compiling() else slot)
        x = flat.to(weight.dtype)
        return (x @ weight) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _mix_gemm(pre: torch.Tensor, res: torch.Tensor, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The width mixing as two batched GEMMs per token block, in ``pre``'s dtype."""
    x = streams.to(pre.dtype)
    u = torch.matmul(pre.unsqueeze(-2), x).squeeze(-2)
    mixed = torch.matmul(res.transpose(-1, -2), x)
    return u.to(streams.dtype), mixed.to(streams.dtype)


class _WidthMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: torch.Tensor, res: torch.Tensor, streams: torch.Tensor, slot: StreamGradSlot | None):
        ctx.save_for_backward(pre, res, streams)
        ctx.slot = slot if slot is not None and slot.armed else None
        with autocast_off(streams.device.type):
            return _mix_gemm(pre, res, streams)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_u: torch.Tensor, grad_mixed: torch.Tensor):
        pre, res, streams = ctx.saved_tensors
        with autocast_off(streams.device.type):
            grad_pre, grad_res, grad_x = _WidthMix._backward(pre, res, streams, grad_u, grad_mixed)
        if ctx.slot is not None and grad_x.dtype == pre.dtype:
            ctx.slot.grad = grad_x  # the projection's backward adds its terms and returns the sum
            return grad_pre, grad_res, None, None
        return grad_pre, grad_res, grad_x.to(streams.dtype), None

    @staticmethod
    def _backward(pre, res, streams, grad_u, grad_mixed):
        """``(grad_pre, grad_res, grad_x)``, all in ``pre``'s dtype."""
        dt = pre.dtype
        x = streams.to(dt)
        grad_u = grad_u.to(dt).contiguous()
        grad_mixed = grad_mixed.to(dt).contiguous()
        grad_pre = torch.matmul(x, grad_u.unsqueeze(-1)).squeeze(-1)
        grad_res = torch.matmul(x, grad_mixed.transpose(-1, -2))
        grad_x = torch.matmul(res, grad_mixed)
        grad_x.addcmul_(pre.unsqueeze(-1), grad_u.unsqueeze(-2))  # in place: no copy of grad_x
        return grad_pre, grad_res, grad_x


def width_mix(
    pre: torch.Tensor, res: torch.Tensor, streams: torch.Tensor, slot: StreamGradSlot | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``u = sum_i pre[i] x_i`` (..., C) and ``mixed_j = sum_i res[i, j] x_i`` (..., n, C).

    Computed in ``pre``'s dtype, returned in the streams' dtype. ``slot``: shared with the
    :func:`project_rms` that produced ``pre`` and ``res`` from these streams
    (:class:`StreamGradSlot`).
    """
    with autocast_off(streams.device.type):
        if _compiling():
            x = streams.to(pre.dtype)
            u = (pre.unsqueeze(-1) * x).sum(-2)
            mixed = (res.unsqueeze(-1) * x.unsqueeze(-2)).sum(-3)
            return u.to(streams.dtype), mixed.to(streams.dtype)
        if _plain(pre, res, streams):
            return _mix_gemm(pre, res, streams)
        return _WidthMix.apply(pre, res, streams, slot)


class _PreMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: torch.Tensor, streams: torch.Tensor, slot: StreamGradSlot | None):
        ctx.save_for_backward(pre, streams)
        ctx.slot = slot if slot is not None and slot.armed else None
        with autocast_off(streams.device.type):
            u = torch.matmul(pre.unsqueeze(-2), streams.to(pre.dtype)).squeeze(-2)
        return u.to(streams.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_u: torch.Tensor):
        pre, streams = ctx.saved_tensors
        with autocast_off(streams.device.type):
            g = grad_u.to(pre.dtype).contiguous()
            grad_pre = torch.matmul(streams.to(pre.dtype), g.unsqueeze(-1)).squeeze(-1)
            grad_x = pre.unsqueeze(-1) * g.unsqueeze(-2)  # the outer product, one pass
        if ctx.slot is not None and grad_x.dtype == pre.dtype:
            ctx.slot.grad = grad_x  # the projection's backward adds its terms and returns the sum
            return grad_pre, None, None
        return grad_pre, grad_x.to(streams.dtype), None


def pre_mix(pre: torch.Tensor, streams: torch.Tensor, slot: StreamGradSlot | None = None) -> torch.Tensor:
    """``u = sum_i pre[i] x_i`` (..., C) alone, for a connection without ``H_res``: one batched
    GEMM per token block; its backward writes ``grad x`` as one outer product (into the
    projection's, with a ``slot``: :class:`StreamGradSlot`). In ``pre``'s dtype, returned in the
    streams'."""
    with autocast_off(streams.device.type):
        if _compiling():
            return (pre.unsqueeze(-1) * streams.to(pre.dtype)).sum(-2).to(streams.dtype)
        if _plain(pre, streams):
            u = torch.matmul(pre.unsqueeze(-2), streams.to(pre.dtype)).squeeze(-2)
            return u.to(streams.dtype)
        return _PreMix.apply(pre, streams, slot)


class _DepthAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mixed: torch.Tensor, post: torch.Tensor, branch_out: torch.Tensor, in_place: bool):
        dt = post.dtype
        ctx.save_for_backward(post, branch_out)
        ctx.dtypes = (mixed.dtype, branch_out.dtype)
        with autocast_off(mixed.device.type):
            if in_place:
                mixed.addcmul_(post.unsqueeze(-1), branch_out.to(dt).unsqueeze(-2))
                ctx.mark_dirty(mixed)
                return mixed
            out = torch.addcmul(mixed.to(dt), post.unsqueeze(-1), branch_out.to(dt).unsqueeze(-2))
        return out.to(mixed.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        post, branch_out = ctx.saved_tensors
        mixed_dtype, branch_dtype = ctx.dtypes
        g = grad.to(post.dtype).contiguous()
        with autocast_off(grad.device.type):
            grad_post = torch.matmul(g, branch_out.to(post.dtype).unsqueeze(-1)).squeeze(-1)
            grad_branch = torch.matmul(post.unsqueeze(-2), g).squeeze(-2)
        return grad.to(mixed_dtype), grad_post, grad_branch.to(branch_dtype), None


def depth_add(
    mixed: torch.Tensor, post: torch.Tensor, branch_out: torch.Tensor, in_place: bool = False
) -> torch.Tensor:
    """``x'_j = mixed_j + post[j] * branch_out``, computed in ``post``'s dtype, in ``mixed``'s.

    ``in_place=True`` writes ``x'`` into ``mixed`` (returned; one stream-sized allocation fewer)
    when ``mixed`` has ``post``'s dtype and nothing else reads it (the caller's promise: a fresh
    mixing output that nothing saved for backward); otherwise, and under ``torch.compile``, a new
    tensor as with ``in_place=False``."""
    with autocast_off(mixed.device.type):
        in_place = in_place and mixed.dtype == post.dtype and not _compiling()
        if _plain(mixed, post, branch_out):
            dt = post.dtype
            if in_place:
                return mixed.addcmul_(post.unsqueeze(-1), branch_out.unsqueeze(-2).to(dt))
            out = torch.addcmul(mixed.to(dt), post.unsqueeze(-1), branch_out.unsqueeze(-2).to(dt))
            return out.to(mixed.dtype)
        return _DepthAdd.apply(mixed, post, branch_out, in_place)
